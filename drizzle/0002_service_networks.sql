CREATE TABLE `service_networks` (
	`serviceId` text PRIMARY KEY NOT NULL,
	`address` text NOT NULL,
	`createdAt` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `service_networks_address_unique` ON `service_networks` (`address`);