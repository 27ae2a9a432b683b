// Starting one of the example servers the Node tests run against (a debug build of
// examples/<name>.rs, or the binary an environment variable names, as .ci/run sets them).
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'
import { freePort } from '../../clients/js/test/helpers.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** The binary of example `name`: `process.env[envVar]`, else the debug build's. */
export function exampleBin(name, envVar) {
  if (process.env[envVar]) return process.env[envVar]
  const t = process.env.CARGO_TARGET_DIR || join(ROOT, 'target')
  const p = join(t, 'debug', 'examples', name)
  if (!existsSync(p)) throw new Error(`no example server at ${p}: run cargo build --example ${name}`)
  return p
}

/** Starts example `name` on a free port and waits until it answers `/healthz`. */
export async function startExample(name, envVar) {
  const port = await freePort()
  const proc = spawn(exampleBin(name, envVar), [`127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr.on('data', (d) => (log += d))
  let exited = false
  const exit = new Promise((r) => proc.on('exit', () => ((exited = true), r())))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20000
  for (;;) {
    if (exited) throw new Error(`server exited at start: ${log}`)
    try {
      if ((await fetch(url + '/healthz')).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`server not healthy: ${log}`)
    await delay(25) // polling interval of the readiness probe
  }
  return {
    url,
    async stop() {
      proc.kill('SIGKILL')
      await exit
    },
  }
}
