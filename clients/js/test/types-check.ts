// Compiled by `npm run typecheck` (tsc --noEmit): the declared API used as a program would.
import { connect, RinghubError, type Publication, type ConnectionState } from 'ringhub-client'

const client = connect('ws://localhost:8080/ws', {
  getToken: async () => 'jwt',
  reconnect: { initialDelay: 500, maxDelay: 5000, factor: 2, jitter: 'full' },
  requestTimeout: 5000,
  autoAck: false,
})
const off = client.on('state', (s: ConnectionState) => console.log(s))
off()
client.on('message', (m: Publication) => m.ack?.())
const sub = client.subscribe<{ text: string }>('chat:a', (p) => console.log(p.data?.text, p.offset), {
  since: { epoch: 'e', offset: 3 },
})
sub.on('recovery_failed', (r) => console.log(r.epoch, r.offset))
sub.on('join', (c) => console.log(c.client, c.user))
async function main() {
  const r = await client.publish('chat:a', 'message', { text: 'hi' }, { excludeSender: true })
  console.log(r?.offset)
  const h = await client.history<{ text: string }>('chat:a', { limit: 10 })
  console.log(h.publications[0]?.data?.text)
  const n: number = (await client.presenceStats('chat:a')).users
  const me: string = (await client.info()).client
  const sum = await client.request<number>('sum', 'calc', [1, 2], { timeout: 100 })
  try {
    await sub.unsubscribe()
  } catch (e) {
    if (e instanceof RinghubError) console.log(e.code)
  }
  console.log(n, me, sum)
  client.close()
}
main()
