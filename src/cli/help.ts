/**
 * What `--help` prints for each command of `patchtree` (the agent's are in
 * agent/cli-help.ts; `serve`'s options come from node/config.ts). Each starts with
 * its usage line, says what the command does and lists every option.
 */

export const KEYS_HELP = `patchtree keys generate --out DIR

Makes a publisher key pair for signing catalogs: DIR/publisher.key (Ed25519, private,
mode 0600: keep it off the nodes) and DIR/publisher.pub (give it to every node with
--trusted-key). Prints the files and the key id.

  --out DIR         the folder to write them to (created if missing; refused if it already has keys)`;

export const CATALOG_HELP = `patchtree catalog build|sign|verify|import ...

  patchtree catalog build --cvrf FILE... [--wsus FILE...] --version V --out FILE [--sign KEYFILE] [--publisher NAME]
  patchtree catalog sign FILE --key KEYFILE
  patchtree catalog verify FILE --key PUBFILE [--signature SIGFILE]
  patchtree catalog import FILE --server URL --token T [--signature SIGFILE]

patchtree catalog COMMAND --help says more about each.`;

export const CATALOG_BUILD_HELP = `patchtree catalog build --cvrf FILE... [--wsus FILE...] --version V --out FILE [--sign KEYFILE] [--publisher NAME]

Builds a signed patch catalog (docs/catalog-format.md) from Microsoft's security update
data: CVRF documents of the Security Update Guide, and optionally WSUS catalog extracts
for the install details. Shows progress on a terminal; prints a summary as JSON.

  --cvrf FILE...      CVRF XML documents (one per month), several after one flag or the flag repeated
  --wsus FILE...      WSUS extracts (JSON) with files, hashes and applicability
  --version V         the release's version, e.g. 2024-06 (a node refuses an older one than it has)
  --out FILE          the catalog to write (.ndjson.gz)
  --sign KEYFILE      sign it with this publisher key (writes FILE.sig)
  --publisher NAME    the publisher named in the header (default: patchtree publisher)`;

export const CATALOG_SIGN_HELP = `patchtree catalog sign FILE --key KEYFILE

Signs a catalog made by another tool: checks that FILE is a catalog (gzip'd NDJSON, its
header and every update valid, as many updates as its header says), then writes FILE.sig
with the publisher key. Nothing is written when the check fails: the errors are listed
with their line numbers, exit code 1.

  --key KEYFILE     the publisher's private key (patchtree keys generate)`;

export const CATALOG_VERIFY_HELP = `patchtree catalog verify FILE --key PUBFILE [--signature SIGFILE]

Checks a catalog's signature against one or more publisher keys, as a node does before
importing it. Exit code 0 when it is signed by one of them, 1 when not.

  --key PUBFILE       a trusted public key (repeat the flag for several)
  --signature FILE    the signature (default: FILE.sig)`;

export const CATALOG_IMPORT_HELP = `patchtree catalog import FILE --server URL --token T [--signature SIGFILE]

Uploads a signed catalog to a node (the root, usually), which verifies and imports it;
prints the import's summary as JSON. Shows the upload's progress on a terminal.

  --server URL        the node's address (or PATCHTREE_SERVER), e.g. https://root:8443
  --token T           an API token of role operator or admin (or PATCHTREE_TOKEN)
  --signature FILE    the signature (default: FILE.sig)

With a node's own CA: NODE_EXTRA_CA_CERTS=<data>/tls/ca.pem.`;

export const CONTENT_HELP = `patchtree content status --server URL --token T [--watch] [--json]

The node's content store: files and bytes verified, downloading, pending and failed, and
the downloader's state. A progress bar on a terminal; --watch follows it until nothing
is left to download. Exit code 1 when files have failed.

  --server URL      the node's address (or PATCHTREE_SERVER)
  --token T         an API token (or PATCHTREE_TOKEN)
  --watch           keep showing it until the downloads are done
  --json            the figures as JSON`;

export const SIMULATE_HELP = `patchtree simulate --server URL --enrollment-token T --computers N [--seed S] [--concurrency C] [--prefix P]

Reports N simulated computers to a node, each with an inventory drawn from the products
of the node's catalog (deterministic for a seed), as agents would; the node assesses them.
Progress on a terminal; a summary as JSON. Running it again with the same prefix reports
the same computers again.

  --server URL              the node's address (or PATCHTREE_SERVER)
  --enrollment-token T      an enrolment token of the node (or PATCHTREE_ENROLLMENT_TOKEN)
  --computers N             how many computers (1 to 10,000,000)
  --seed S                  the seed (default 1)
  --concurrency C           reports in flight at once (default 16)
  --prefix P                the computers' name prefix (default sim<seed>)`;

export const DEMO_HELP = `patchtree demo [--keep] [--computers N]

Runs a small tree on this machine: a root and three sites, each a real node on its own
ports, the bundled real catalog imported at the root, simulated computers at every site.
Prints each node's console address and a token to sign in with; Ctrl-C stops it.

  --keep            keep the demo's data folder when it stops (its path is printed)
  --computers N     simulated computers per site (default 200)`;

export const BACKUP_HELP = `patchtree backup --data DIR --out FILE [--with-content]

A consistent copy of a node's data folder, taken while the node runs (SQLite's VACUUM
INTO) or not: the database, keys, tokens and TLS material, and with --with-content the
verified update files. FILE is a gzip'd tar with a manifest of every file's SHA-256.

  --data DIR        the node's data folder (its --data)
  --out FILE        the backup to write (must not exist; mode 0600: it holds the node's keys)
  --with-content    also the content store (update files; else they are downloaded again)`;

export const RESTORE_HELP = `patchtree restore --from FILE --data DIR

Restores a backup into DIR, which must be new or empty; every file is checked against the
backup's manifest first. The node keeps its id, keys and credentials, so its children and
agents reconnect; it gets a new change-log epoch, so its children resync completely from
what it holds. Start it with \`patchtree serve --data DIR\` and the flags it had.

  --from FILE       a file made by patchtree backup
  --data DIR        the data folder to create`;
