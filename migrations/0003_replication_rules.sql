ALTER TABLE `custom_severities` ADD `origin_key` text;--> statement-breakpoint
CREATE UNIQUE INDEX `custom_severities_origin_key_unique` ON `custom_severities` (`origin_key`);--> statement-breakpoint
ALTER TABLE `settings` ADD `origin` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `children` ADD `rules` text DEFAULT '{}' NOT NULL;