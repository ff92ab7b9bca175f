DROP TABLE `resync_seen`;--> statement-breakpoint
DROP INDEX `change_log_key`;