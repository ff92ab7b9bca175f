CREATE TABLE `node_reports` (
	`node_id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`parent_id` text NOT NULL,
	`via` text NOT NULL,
	`reported_at` integer NOT NULL,
	`interval_ms` integer NOT NULL,
	`received_at` integer NOT NULL,
	`digest` text NOT NULL,
	`summary` text NOT NULL
);
--> statement-breakpoint
DROP INDEX `policies_name_unique`;--> statement-breakpoint
ALTER TABLE `policies` ADD `origin_name` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `policies` ADD `shared_targets` text DEFAULT '' NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX `policies_origin_name` ON `policies` (`origin`,`name`);