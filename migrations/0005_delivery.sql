CREATE TABLE `agent_events` (
	`computer_id` integer NOT NULL,
	`event_id` text NOT NULL,
	`update_id` text NOT NULL,
	`policy_id` text,
	`type` text NOT NULL,
	`attempt` integer NOT NULL,
	`at` integer NOT NULL,
	`exit_code` integer,
	`message` text,
	`received_at` integer NOT NULL,
	PRIMARY KEY(`computer_id`, `event_id`)
);
--> statement-breakpoint
CREATE INDEX `agent_events_received` ON `agent_events` (`received_at`);--> statement-breakpoint
CREATE INDEX `agent_events_update` ON `agent_events` (`computer_id`,`update_id`,`at`);--> statement-breakpoint
CREATE TABLE `agents` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`secret_hash` text NOT NULL,
	`enrollment_token_id` text,
	`created_at` integer NOT NULL,
	`last_seen_at` integer,
	`revoked_at` integer,
	`revoked_by` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `agents_secret_hash_unique` ON `agents` (`secret_hash`);--> statement-breakpoint
CREATE TABLE `delivery_status` (
	`computer_id` integer NOT NULL,
	`update_id` text NOT NULL,
	`state` text NOT NULL,
	`download_failures` integer NOT NULL,
	`install_failures` integer NOT NULL,
	`last_attempt` integer,
	`last_exit_code` integer,
	`last_error` text,
	`last_event_at` integer NOT NULL,
	`retries_cleared_at` integer,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`computer_id`, `update_id`)
);
--> statement-breakpoint
CREATE TABLE `delivery_targets` (
	`policy_id` text NOT NULL,
	`computer_id` integer NOT NULL,
	`update_id` text NOT NULL,
	`applicable` text NOT NULL,
	`since` integer NOT NULL,
	PRIMARY KEY(`policy_id`, `computer_id`, `update_id`)
);
--> statement-breakpoint
CREATE INDEX `delivery_targets_computer` ON `delivery_targets` (`computer_id`,`update_id`);--> statement-breakpoint
CREATE TABLE `policies` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`description` text,
	`enabled` integer NOT NULL,
	`start_at` integer NOT NULL,
	`deadline_at` integer,
	`targets` text NOT NULL,
	`installation` text,
	`follow_supersedence` integer NOT NULL,
	`origin` text DEFAULT '' NOT NULL,
	`revision` integer NOT NULL,
	`created_at` integer NOT NULL,
	`created_by` text,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `policies_name_unique` ON `policies` (`name`);--> statement-breakpoint
CREATE TABLE `policy_history` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`policy_id` text NOT NULL,
	`at` integer NOT NULL,
	`by` text,
	`action` text NOT NULL,
	`detail` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `policy_history_policy` ON `policy_history` (`policy_id`,`id`);--> statement-breakpoint
CREATE TABLE `policy_updates` (
	`policy_id` text NOT NULL,
	`update_id` text NOT NULL,
	`added_at` integer NOT NULL,
	PRIMARY KEY(`policy_id`, `update_id`)
);
--> statement-breakpoint
CREATE INDEX `policy_updates_update` ON `policy_updates` (`update_id`);