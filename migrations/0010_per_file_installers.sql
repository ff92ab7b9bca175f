ALTER TABLE `computers` ADD `languages` text DEFAULT '' NOT NULL;--> statement-breakpoint
UPDATE `computers` SET `languages` = coalesce(`language`, '');--> statement-breakpoint
ALTER TABLE `update_files` ADD `position` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `update_files` ADD `installer` text;--> statement-breakpoint
-- Format 1 ran the update's command once per file: each file's installer is the kind
-- whose command line that was (as catalog/format.ts fromV1 converts), else the command.
UPDATE `update_files` SET `installer` = (SELECT CASE
    WHEN u.install_command = '' THEN NULL
    WHEN u.install_command = 'wusa.exe "{file}" /quiet /norestart' AND lower(update_files.name) LIKE '%.msu' THEN '{"type":"wusa"}'
    WHEN u.install_command = 'dism.exe /online /add-package /packagepath:"{file}" /quiet /norestart' AND lower(update_files.name) LIKE '%.cab' THEN '{"type":"dism"}'
    WHEN u.install_command = 'msiexec.exe /p "{file}" /qn /norestart' AND lower(update_files.name) LIKE '%.msp' THEN '{"type":"msp"}'
    ELSE json_object('type', 'command', 'command', u.install_command) END
  FROM `updates` u WHERE u.id = update_files.update_id);--> statement-breakpoint
UPDATE `update_files` SET `position` = (SELECT count(*) FROM `update_files` f2
  WHERE f2.update_id = update_files.update_id AND (f2.language, f2.name, f2.sha256) < (update_files.language, update_files.name, update_files.sha256));--> statement-breakpoint
ALTER TABLE `updates` DROP COLUMN `install_command`;
