import { z } from 'zod';
import { inWindows, nextOpening, windowSchema, zoneSchema } from '../lib/schedule.js';

/**
 * Installation settings (seed: "when the software update plug-in can install
 * software updates and restart the target computer"): the node's defaults, which a
 * policy may override field by field. The decisions below are pure functions of
 * the settings, the policy's deadline and the instant, shared by the node (what it
 * tells agents) and the agent (what it does), and tested across weeks and DST.
 */

/** `local`: the computer's own time zone, whatever it is; otherwise an IANA zone. */
export const installZoneSchema = z.union([z.literal('local'), zoneSchema]);

export const maintenanceSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('any-time').describe('Install at any time') }),
  z.strictObject({
    mode: z.literal('windows'),
    zone: installZoneSchema.describe('"local" (the computer\'s time) or an IANA zone'),
    windows: z.array(windowSchema).min(1).max(50),
  }),
]);
export type Maintenance = z.infer<typeof maintenanceSchema>;

export const restartSchema = z.strictObject({
  mode: z
    .enum(['never', 'in-window', 'after-deadline'])
    .describe(
      'never: the user restarts; in-window: inside a maintenance window only; after-deadline: inside a window, or forced once the deadline has passed, after warning the user',
    ),
  warningMinutes: z.number().int().min(0).max(1440).describe('Minutes of warning before a forced restart'),
});
export type Restart = z.infer<typeof restartSchema>;

export const retriesSchema = z.strictObject({
  download: z.number().int().min(1).max(1000).describe('Failed downloads of an update before the agent stops trying it'),
  install: z.number().int().min(1).max(1000).describe('Failed installs of an update before the agent stops trying it'),
});

export const installationSchema = z.strictObject({
  maintenance: maintenanceSchema,
  restart: restartSchema,
  notification: z.strictObject({
    text: z.string().max(1000).describe('Shown to the user before installs and restarts'),
    minutesBefore: z.number().int().min(0).max(1440).describe('Minutes of notice before an install starts'),
  }),
  retries: retriesSchema,
});
export type Installation = z.infer<typeof installationSchema>;

/** A policy's overrides: any top-level part of the settings, replacing the node's. */
export const installationOverrideSchema = installationSchema.partial();
export type InstallationOverride = z.infer<typeof installationOverrideSchema>;

/** Conservative defaults: installs and restarts at night, the seed's retry ceilings (11 downloads, 4 installs). */
export const DEFAULT_INSTALLATION: Installation = {
  maintenance: { mode: 'windows', zone: 'local', windows: [{ days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '22:00', end: '05:00' }] },
  restart: { mode: 'in-window', warningMinutes: 15 },
  notification: { text: 'Software updates are being installed on this computer.', minutesBefore: 5 },
  retries: { download: 11, install: 4 },
};

export const INSTALLATION_SETTING = 'installation';

export function effectiveInstallation(node: Installation, override: InstallationOverride | null | undefined): Installation {
  return { ...node, ...(override ?? {}) };
}

const zoneOf = (m: Extract<Maintenance, { mode: 'windows' }>, localZone: string) => (m.zone === 'local' ? localZone : m.zone);

/** Inside a maintenance window at `at` (always, for any-time). */
export function inMaintenance(s: Installation, at: Date, localZone: string): boolean {
  const m = s.maintenance;
  return m.mode === 'any-time' || inWindows(m.windows, zoneOf(m, localZone), at);
}

export interface InstallDecision {
  install: boolean;
  reason: 'window' | 'any-time' | 'deadline' | 'not-started' | 'outside-window';
  /** When it may next install, if not now (null: never within the next week). */
  next: Date | null;
}

/**
 * May the agent install a policy's update at `at`? Inside a maintenance window, or at
 * any time once the deadline has passed (so a deadline is kept even when no window
 * opens before it), never before the policy's start.
 */
export function installDecision(s: Installation, o: { startAt: Date; deadline: Date | null }, at: Date, localZone: string): InstallDecision {
  if (at < o.startAt) return { install: false, reason: 'not-started', next: o.startAt };
  if (o.deadline && at >= o.deadline) return { install: true, reason: 'deadline', next: at };
  const m = s.maintenance;
  if (m.mode === 'any-time') return { install: true, reason: 'any-time', next: at };
  if (inWindows(m.windows, zoneOf(m, localZone), at)) return { install: true, reason: 'window', next: at };
  let next = nextOpening(m.windows, zoneOf(m, localZone), at);
  if (o.deadline && (!next || o.deadline < next)) next = o.deadline;
  return { install: false, reason: 'outside-window', next };
}

export interface RestartDecision {
  action: 'restart' | 'warn' | 'wait' | 'never';
  /** When the restart will (or may) happen: now, after the warning, or at the next window. */
  at: Date | null;
}

/**
 * A restart is pending since `pendingSince`. never: the user restarts. in-window:
 * restart inside a window. after-deadline: inside a window, or once the deadline
 * has passed, warn the user and restart `warningMinutes` later.
 */
export function restartDecision(s: Installation, deadline: Date | null, pendingSince: Date, at: Date, localZone: string): RestartDecision {
  const r = s.restart;
  if (r.mode === 'never') return { action: 'never', at: null };
  if (inMaintenance(s, at, localZone)) return { action: 'restart', at };
  const m = s.maintenance;
  const opening = m.mode === 'windows' ? nextOpening(m.windows, zoneOf(m, localZone), at) : at;
  if (r.mode === 'in-window' || !deadline) return { action: 'wait', at: opening };
  const forceAt = new Date(Math.max(deadline.getTime(), pendingSince.getTime()) + r.warningMinutes * 60_000);
  if (at >= forceAt) return { action: 'restart', at };
  const warnFrom = new Date(forceAt.getTime() - r.warningMinutes * 60_000);
  if (at >= warnFrom) return { action: 'warn', at: forceAt };
  return { action: 'wait', at: opening && opening < warnFrom ? opening : warnFrom };
}
