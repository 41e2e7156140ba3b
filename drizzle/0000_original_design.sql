CREATE TABLE `config` (
	`version` integer,
	`cursor` text
);
--> statement-breakpoint
CREATE TABLE `layers` (
	`digest` text PRIMARY KEY NOT NULL,
	`layerId` text,
	`path` text,
	`osVersion` text
);
--> statement-breakpoint
CREATE TABLE `services` (
	`id` text PRIMARY KEY NOT NULL,
	`version` integer,
	`serviceProvider` text,
	`path` text,
	`unit` text,
	`user` text,
	`hostname` text,
	`permissions` text,
	`state` integer,
	`status` integer,
	`startat` integer,
	`ttl` integer,
	`alertRules` text,
	`ulLimit` integer,
	`dlLimit` integer,
	`ulSpeed` integer,
	`dlSpeed` integer,
	`storageLimit` integer,
	`stateLimit` integer,
	`layerList` text,
	`deviceResources` text
);
--> statement-breakpoint
CREATE TABLE `trafficmonitor` (
	`chain` text PRIMARY KEY NOT NULL,
	`time` integer,
	`value` integer
);
--> statement-breakpoint
CREATE TABLE `users` (
	`users` text NOT NULL,
	`serviceid` text NOT NULL,
	`storageFolder` text,
	`stateCheckSum` blob,
	PRIMARY KEY(`users`, `serviceid`)
);
