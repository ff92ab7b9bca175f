CREATE TABLE `assessment_state` (
	`id` integer PRIMARY KEY NOT NULL,
	`cursor` integer NOT NULL,
	`full_pending` integer DEFAULT 0 NOT NULL,
	`full_at` integer
);
--> statement-breakpoint
CREATE TABLE `computer_products` (
	`product` text NOT NULL,
	`computer_id` integer NOT NULL,
	PRIMARY KEY(`product`, `computer_id`)
);
--> statement-breakpoint
CREATE INDEX `computer_products_computer` ON `computer_products` (`computer_id`);--> statement-breakpoint
CREATE TABLE `computer_updates` (
	`computer_id` integer NOT NULL,
	`update_id` text NOT NULL,
	`state` text NOT NULL,
	PRIMARY KEY(`computer_id`, `update_id`)
);
--> statement-breakpoint
CREATE INDEX `computer_updates_update` ON `computer_updates` (`update_id`,`state`);--> statement-breakpoint
CREATE TABLE `computers` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`agent_key` text NOT NULL,
	`name` text NOT NULL,
	`os_family` text NOT NULL,
	`os_name` text,
	`os_version` text,
	`arch` text,
	`language` text,
	`agent_version` text,
	`inventory` text NOT NULL,
	`scan_id` integer NOT NULL,
	`last_scan_at` integer NOT NULL,
	`created_at` integer NOT NULL,
	`required` integer DEFAULT 0 NOT NULL,
	`unknown` integer DEFAULT 0 NOT NULL,
	`req_critical` integer DEFAULT 0 NOT NULL,
	`req_important` integer DEFAULT 0 NOT NULL,
	`req_moderate` integer DEFAULT 0 NOT NULL,
	`req_low` integer DEFAULT 0 NOT NULL,
	`req_unrated` integer DEFAULT 0 NOT NULL,
	`assessed_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `computers_agent_key_unique` ON `computers` (`agent_key`);--> statement-breakpoint
CREATE INDEX `computers_name` ON `computers` (`name`);--> statement-breakpoint
CREATE INDEX `computers_last_scan` ON `computers` (`last_scan_at`);--> statement-breakpoint
CREATE INDEX `computers_os` ON `computers` (`os_name`);--> statement-breakpoint
CREATE INDEX `computers_language` ON `computers` (`language`);--> statement-breakpoint
CREATE TABLE `custom_filters` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`condition` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `custom_filters_name_unique` ON `custom_filters` (`name`);--> statement-breakpoint
CREATE TABLE `enrollment_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`token_hash` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text,
	`expires_at` integer NOT NULL,
	`max_uses` integer,
	`uses` integer DEFAULT 0 NOT NULL,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `enrollment_tokens_token_hash_unique` ON `enrollment_tokens` (`token_hash`);--> statement-breakpoint
CREATE TABLE `update_compliance` (
	`update_id` text PRIMARY KEY NOT NULL,
	`installed` integer NOT NULL,
	`required` integer NOT NULL,
	`unknown` integer NOT NULL,
	`superseded` integer NOT NULL
);
