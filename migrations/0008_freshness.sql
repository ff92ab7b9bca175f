CREATE TABLE `freshness_problems` (
	`version` text NOT NULL,
	`node_id` text NOT NULL,
	`node_name` text NOT NULL,
	`classes` text NOT NULL,
	`late_ms` integer NOT NULL,
	`detected_at` integer NOT NULL,
	PRIMARY KEY(`version`, `node_id`)
);
--> statement-breakpoint
CREATE TABLE `freshness_releases` (
	`version` text PRIMARY KEY NOT NULL,
	`published_at` integer NOT NULL,
	`imported_at` integer NOT NULL,
	`received_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `freshness_updates` (
	`version` text NOT NULL,
	`update_id` text NOT NULL,
	`revision` integer NOT NULL,
	`languages` text NOT NULL,
	`family` text NOT NULL,
	`visible_at` integer,
	PRIMARY KEY(`version`, `update_id`)
);
--> statement-breakpoint
CREATE INDEX `freshness_updates_update` ON `freshness_updates` (`update_id`);