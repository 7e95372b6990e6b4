// Node entries only (api/node.ts, the workers' main files, npm start): a `.env` file in the working
// directory fills the variables the environment leaves unset. Workers and Deno take their own bindings.

/** Loads `path` into process.env if the file exists (set variables win); true when a file was read. */
export function loadDotEnv(path = '.env'): boolean {
  try {
    process.loadEnvFile(path);
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return false;
    throw error;
  }
}
