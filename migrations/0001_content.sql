CREATE TABLE `content_files` (
	`sha256` text PRIMARY KEY NOT NULL,
	`size` integer NOT NULL,
	`url` text NOT NULL,
	`name` text NOT NULL,
	`state` text NOT NULL,
	`bytes_done` integer NOT NULL,
	`attempts` integer NOT NULL,
	`last_error` text,
	`next_attempt_at` integer NOT NULL,
	`verified_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `content_files_state` ON `content_files` (`state`,`next_attempt_at`);--> statement-breakpoint
CREATE TABLE `download_marks` (
	`update_id` text PRIMARY KEY NOT NULL,
	`marked_at` integer NOT NULL,
	`marked_by` text
);
