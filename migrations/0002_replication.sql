CREATE TABLE `change_log` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`key` text NOT NULL,
	`op` text NOT NULL,
	`languages` text NOT NULL,
	`payload` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `change_log_key` ON `change_log` (`kind`,`key`);--> statement-breakpoint
CREATE TABLE `children` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`credential_hash` text NOT NULL,
	`languages` text NOT NULL,
	`version` text,
	`protocol_version` integer,
	`acked_seq` integer NOT NULL,
	`files_pending` integer DEFAULT 0 NOT NULL,
	`last_seen_at` integer,
	`last_error` text,
	`force_resync` integer NOT NULL,
	`created_at` integer NOT NULL,
	`removed_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `children_credential_hash_unique` ON `children` (`credential_hash`);--> statement-breakpoint
CREATE TABLE `join_tokens` (
	`token_hash` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text,
	`expires_at` integer NOT NULL,
	`used_at` integer,
	`used_by` text
);
--> statement-breakpoint
CREATE TABLE `node_identity` (
	`id` integer PRIMARY KEY NOT NULL,
	`node_id` text NOT NULL,
	`epoch` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `resync_seen` (
	`kind` text NOT NULL,
	`key` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `resync_seen_key` ON `resync_seen` (`kind`,`key`);--> statement-breakpoint
CREATE TABLE `upstream_state` (
	`id` integer PRIMARY KEY NOT NULL,
	`address` text NOT NULL,
	`parent_id` text NOT NULL,
	`credential` text NOT NULL,
	`epoch` text NOT NULL,
	`cursor` integer NOT NULL,
	`languages` text NOT NULL,
	`resyncing` integer NOT NULL,
	`last_error` text,
	`last_success_at` integer,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `updates` ADD `origin` text DEFAULT '' NOT NULL;