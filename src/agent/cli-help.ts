/** What `patchtree agent COMMAND --help` prints (agent/cli.ts). */

export const AGENT_USAGE = `patchtree agent: the software update agent of a managed computer

  patchtree agent run --server https://HOST:8443 --state DIR [--enrollment-token T] [--inventory file:PATH|windows] [--insecure]
                      [--name NAME] [--interval SECONDS] [--install-timeout SECONDS]
  patchtree agent status --state DIR [--json]
  patchtree agent task list --state DIR
  patchtree agent task run NAME --state DIR
  patchtree agent task stop --state DIR
  patchtree agent log --state DIR [--follow] [--clear]
  patchtree agent clear-retries --state DIR
  patchtree agent update-data --state DIR

patchtree agent COMMAND --help says more about each.`;

export const RUN_HELP = `patchtree agent run --server https://HOST:8443 --state DIR [options]

Runs the agent in the foreground (as a service, docs/operations.md says how): it enrols
with the node once, then checks in on an interval, reports the computer's inventory,
downloads what its policies assign, installs it in the maintenance windows and reports
every step. Its state folder keeps its credential, queue of events and patch log.

  --server URL              the node's HTTPS address (kept after enrolment)
  --state DIR               the agent's state folder (created, mode 0700)
  --enrollment-token T      the node's enrolment token, for the first start (or PATCHTREE_ENROLLMENT_TOKEN)
  --inventory SPEC          windows (on Windows, the default) or file:PATH (a JSON inventory, for labs and tests)
  --name NAME               the computer's name (default: the host name)
  --interval SECONDS        seconds between check-ins (default 300)
  --install-timeout SECONDS how long one installer may run before it is stopped (default 7200)
  --insecure                allow a plain-HTTP --server (a lab only)`;

export const STATUS_HELP = `patchtree agent status --state DIR [--json]

What the agent is doing: running or not, its node, the last scan (required updates by
severity), each assigned update's state, retry counts. Read from the running agent, or
from the state folder when it is not running.

  --state DIR       the agent's state folder
  --json            as JSON`;

export const TASK_HELP = `patchtree agent task list|run NAME|stop --state DIR

  patchtree agent task list --state DIR        the agent's tasks (scan, deploy, ...), their schedules, which runs
  patchtree agent task run NAME --state DIR    start a task now (follow it with patchtree agent log --follow)
  patchtree agent task stop --state DIR        stop the running task

  --state DIR       the agent's state folder`;

export const LOG_HELP = `patchtree agent log --state DIR [--follow] [--clear]

The agent's patch log: every check-in, scan, download and install with its exit code.

  --state DIR       the agent's state folder
  --follow          keep printing what is added (Ctrl-C ends)
  --clear           empty the log (the clearing is logged)`;

export const CLEAR_RETRIES_HELP = `patchtree agent clear-retries --state DIR

Clears this computer's failed-download and failed-install counts, at the agent and at its
node, so updates that reached their retry ceiling are tried again.

  --state DIR       the agent's state folder`;

export const UPDATE_DATA_HELP = `patchtree agent update-data --state DIR

Asks the running agent to fetch its configuration, rules and assignments from the node now.

  --state DIR       the agent's state folder`;
