import { readFileSync } from 'node:fs';

/** This build's version (package.json's), in a module of its own: the CLI prints it without loading the server. */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
