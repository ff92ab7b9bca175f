CREATE TABLE `compliance_snapshots` (
	`day` text PRIMARY KEY NOT NULL,
	`summary` text NOT NULL,
	`taken_at` integer NOT NULL
);
