CREATE TABLE `fleet_outbox` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`topic` text NOT NULL,
	`payload` text NOT NULL,
	`retain` integer DEFAULT false NOT NULL,
	`createdAt` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `fleet_outbox_kind` ON `fleet_outbox` (`kind`,`id`);