import { defineConfig } from 'drizzle-kit';

// Migrations are generated from the per-domain schema files and applied at start
// by src/db/migrate.ts. Run `npm run db:generate` after changing a schema.ts.
export default defineConfig({
  dialect: 'sqlite',
  schema: './src/*/schema.ts',
  out: './migrations',
});
