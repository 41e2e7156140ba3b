CREATE TABLE `desired_state` (
	`operationId` text PRIMARY KEY NOT NULL,
	`version` integer NOT NULL,
	`hash` text NOT NULL,
	`desired` text NOT NULL,
	`state` text NOT NULL,
	`items` text DEFAULT '[]' NOT NULL,
	`layerDigests` text DEFAULT '[]' NOT NULL,
	`error` text,
	`finishedAt` integer,
	`createdAt` integer DEFAULT 0 NOT NULL,
	`updatedAt` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE INDEX `desired_state_created` ON `desired_state` (`createdAt`);--> statement-breakpoint
CREATE INDEX `desired_state_state` ON `desired_state` (`state`);