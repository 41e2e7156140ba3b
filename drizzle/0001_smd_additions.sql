CREATE TABLE `alerts` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`time` integer NOT NULL,
	`source` text NOT NULL,
	`serviceId` text,
	`kind` text NOT NULL,
	`message` text NOT NULL,
	`payload` text DEFAULT '{}' NOT NULL
);
--> statement-breakpoint
CREATE INDEX `alerts_time` ON `alerts` (`time`);--> statement-breakpoint
CREATE INDEX `alerts_service` ON `alerts` (`serviceId`);--> statement-breakpoint
CREATE TABLE `operation_steps` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`operationId` text NOT NULL,
	`name` text NOT NULL,
	`state` text NOT NULL,
	`progress` integer DEFAULT 0 NOT NULL,
	`message` text,
	`time` integer NOT NULL,
	FOREIGN KEY (`operationId`) REFERENCES `operations`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `operation_steps_op` ON `operation_steps` (`operationId`);--> statement-breakpoint
CREATE TABLE `operations` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`target` text,
	`state` text NOT NULL,
	`progress` integer DEFAULT 0 NOT NULL,
	`step` text,
	`error` text,
	`inputs` text DEFAULT '{}' NOT NULL,
	`result` text,
	`createdAt` integer NOT NULL,
	`updatedAt` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `operations_state` ON `operations` (`state`);--> statement-breakpoint
CREATE INDEX `operations_created` ON `operations` (`createdAt`);--> statement-breakpoint
ALTER TABLE `config` ADD `currentUsers` text DEFAULT '[]' NOT NULL;--> statement-breakpoint
ALTER TABLE `config` ADD `createdAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `config` ADD `updatedAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `config` ADD `rowVersion` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE `layers` ADD `size` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `layers` ADD `mediaType` text;--> statement-breakpoint
ALTER TABLE `layers` ADD `createdAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `layers` ADD `updatedAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `layers` ADD `rowVersion` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `uid` integer;--> statement-breakpoint
ALTER TABLE `services` ADD `settings` text DEFAULT '{}' NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `imageConfig` text DEFAULT '{}' NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `desired` text DEFAULT 'running' NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `createdAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `updatedAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `services` ADD `rowVersion` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX `services_uid_unique` ON `services` (`uid`);--> statement-breakpoint
ALTER TABLE `trafficmonitor` ADD `serviceId` text;--> statement-breakpoint
ALTER TABLE `trafficmonitor` ADD `direction` text;--> statement-breakpoint
ALTER TABLE `trafficmonitor` ADD `periodStart` integer;--> statement-breakpoint
ALTER TABLE `trafficmonitor` ADD `createdAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `trafficmonitor` ADD `updatedAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `createdAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `updatedAt` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `rowVersion` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
CREATE INDEX `users_serviceid` ON `users` (`serviceid`);