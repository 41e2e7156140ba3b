/**
 * The fleet topics (SPEC 14): everything lives under `<topicPrefix>/<deviceId>/`. Pure.
 */
export const TOPIC_NAMES = ['desired', 'reported', 'events', 'online', 'rpc', 'rpc/reply'] as const;
export type TopicName = (typeof TOPIC_NAMES)[number];

/** A deviceId is one topic level: no `/`, no wildcards, nothing MQTT treats specially. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** A prefix is one or more levels of the same characters, without leading or trailing `/`. */
export const TOPIC_PREFIX_PATTERN = /^[A-Za-z0-9._:-]+(\/[A-Za-z0-9._:-]+)*$/;

export interface FleetTopics {
  base: string;
  desired: string;
  reported: string;
  events: string;
  online: string;
  rpc: string;
  rpcReply: string;
  /** The full topic of a name below the base. */
  of(name: TopicName): string;
  /** The name below the base of a full topic, or null when it is not one of ours. */
  nameOf(topic: string): TopicName | null;
}

export function fleetTopics(topicPrefix: string, deviceId: string): FleetTopics {
  if (!TOPIC_PREFIX_PATTERN.test(topicPrefix)) throw new Error(`invalid topicPrefix ${JSON.stringify(topicPrefix)}`);
  if (!DEVICE_ID_PATTERN.test(deviceId)) throw new Error(`invalid deviceId ${JSON.stringify(deviceId)}`);
  const base = `${topicPrefix}/${deviceId}`;
  const of = (name: TopicName) => `${base}/${name}`;
  return {
    base,
    desired: of('desired'),
    reported: of('reported'),
    events: of('events'),
    online: of('online'),
    rpc: of('rpc'),
    rpcReply: of('rpc/reply'),
    of,
    nameOf(topic) {
      if (!topic.startsWith(`${base}/`)) return null;
      const rest = topic.slice(base.length + 1);
      return (TOPIC_NAMES as readonly string[]).includes(rest) ? (rest as TopicName) : null;
    },
  };
}
