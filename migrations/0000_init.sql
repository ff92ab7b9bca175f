CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`role` text NOT NULL,
	`token_hash` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text,
	`last_used_at` integer,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_token_hash_unique` ON `api_tokens` (`token_hash`);--> statement-breakpoint
CREATE TABLE `catalog_releases` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`version` text NOT NULL,
	`publisher` text NOT NULL,
	`key_id` text NOT NULL,
	`file_sha256` text NOT NULL,
	`created_at` text NOT NULL,
	`imported_at` integer NOT NULL,
	`imported_by` text NOT NULL,
	`source` text NOT NULL,
	`updates` integer NOT NULL,
	`added` integer NOT NULL,
	`changed` integer NOT NULL,
	`expired` integer NOT NULL,
	`unchanged` integer NOT NULL,
	`duration_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `catalog_releases_version` ON `catalog_releases` (`version`);--> statement-breakpoint
CREATE TABLE `custom_severities` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`rank` integer NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `custom_severities_name_unique` ON `custom_severities` (`name`);--> statement-breakpoint
CREATE TABLE `update_cves` (
	`update_id` text NOT NULL,
	`cve` text NOT NULL,
	PRIMARY KEY(`update_id`, `cve`)
);
--> statement-breakpoint
CREATE INDEX `update_cves_cve` ON `update_cves` (`cve`);--> statement-breakpoint
CREATE TABLE `update_files` (
	`update_id` text NOT NULL,
	`sha256` text NOT NULL,
	`name` text NOT NULL,
	`url` text NOT NULL,
	`size` integer NOT NULL,
	`language` text NOT NULL,
	PRIMARY KEY(`update_id`, `sha256`)
);
--> statement-breakpoint
CREATE INDEX `update_files_sha256` ON `update_files` (`sha256`);--> statement-breakpoint
CREATE TABLE `update_supersedes` (
	`update_id` text NOT NULL,
	`kb` text NOT NULL,
	PRIMARY KEY(`update_id`, `kb`)
);
--> statement-breakpoint
CREATE INDEX `update_supersedes_kb` ON `update_supersedes` (`kb`);--> statement-breakpoint
CREATE TABLE `updates` (
	`id` text PRIMARY KEY NOT NULL,
	`revision` integer NOT NULL,
	`kb` text,
	`bulletin` text,
	`title` text NOT NULL,
	`description` text,
	`vendor` text NOT NULL,
	`product_family` text,
	`product` text NOT NULL,
	`classification` text NOT NULL,
	`severity` text,
	`custom_severity_id` integer,
	`cves` text NOT NULL,
	`cve_details` text NOT NULL,
	`release_date` text NOT NULL,
	`supersedes` text NOT NULL,
	`vendor_superseded` integer NOT NULL,
	`restart` text NOT NULL,
	`install_command` text NOT NULL,
	`success_codes` text NOT NULL,
	`reboot_codes` text NOT NULL,
	`applicability` text NOT NULL,
	`installed` text NOT NULL,
	`more_info_url` text,
	`languages` text NOT NULL,
	`expired` integer NOT NULL,
	`content_hash` text NOT NULL,
	`release_version` text NOT NULL,
	`first_version` text NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `updates_kb` ON `updates` (`kb`);--> statement-breakpoint
CREATE INDEX `updates_product` ON `updates` (`product`);--> statement-breakpoint
CREATE INDEX `updates_release` ON `updates` (`release_date`,`id`);--> statement-breakpoint
CREATE INDEX `updates_severity` ON `updates` (`severity`);--> statement-breakpoint
CREATE INDEX `updates_custom_severity` ON `updates` (`custom_severity_id`);--> statement-breakpoint
CREATE TABLE `settings` (
	`key` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by` text
);
