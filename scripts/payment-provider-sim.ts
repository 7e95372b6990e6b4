// A payment provider simulator for development and tests: POST /payments pays once per Idempotency-Key
// (the same key again answers the same receipt, a different amount under it 422) and calls the API back
// with a signed webhook. Faults are set by POST /admin/faults (or the env at start) and apply to the next
// `count` calls (all calls without one):
//   error   answers 503 without paying        hang   never answers (the client's time-out fires)
//   lose    pays, then drops the connection (a success whose answer is lost)
//   refuse  answers 422 without paying (the account is closed: asking again under the same key won't help)
//   latencyMs delays every answer; duplicateWebhooks sends each callback that many times.
// GET /admin/state shows calls received, payments made and callbacks sent; POST /admin/reset forgets them.
//
//   npm run payment-sim            (PORT=4010 PAYMENT_PROVIDER_KEY=... PAYMENT_WEBHOOK_SECRET=...
//                                   PAYMENT_WEBHOOK_URL=http://localhost:3000/api/payments/webhook
//                                   SIM_FAULT=error SIM_LATENCY_MS=200)
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { signWebhook, WEBHOOK_SIGNATURE_HEADER } from '../shared/loans/payments.ts';

export type SimFaultMode = 'ok' | 'error' | 'hang' | 'lose' | 'refuse';

export interface SimFaults {
  mode: SimFaultMode;
  /** Calls the mode applies to before it returns to ok (undefined: every call). */
  count?: number;
  latencyMs: number;
  /** Each callback is sent this many times (1: once; 0: none). */
  duplicateWebhooks: number;
}

export interface SimPayment {
  idempotencyKey: string;
  paymentId: string;
  applicationId: string;
  amount: number;
  paidAt: string;
  /** The W3C `traceparent` header of the request that paid, if it sent one (the caller's span). */
  traceparent?: string;
}

export interface SimState {
  /** POST /payments requests received (each attempt, whatever was answered). */
  calls: number;
  /** Requests that named a key already paid (answered with the same receipt, nothing paid). */
  repeats: number;
  payments: SimPayment[];
  webhooksSent: number;
  faults: SimFaults;
}

export interface SimOptions {
  port?: number;
  /** The credential the API must send (Authorization: Bearer). */
  key: string;
  webhookSecret?: string;
  /** Where callbacks are POSTed... */
  webhookUrl?: string;
  /** ...or how they are delivered in-process (tests: app.request). */
  deliver?: (body: string, signature: string) => unknown;
  faults?: Partial<SimFaults>;
}

export interface PaymentProviderSim {
  url: string;
  state(): SimState;
  setFaults(faults: Partial<SimFaults>): void;
  /** Callbacks still being delivered. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const defaults = (): SimFaults => ({ mode: 'ok', latencyMs: 0, duplicateWebhooks: 1 });

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startPaymentProviderSim(options: SimOptions): Promise<PaymentProviderSim> {
  const payments = new Map<string, SimPayment>();
  let faults: SimFaults = { ...defaults(), ...options.faults };
  let calls = 0;
  let repeats = 0;
  let webhooksSent = 0;
  const inFlight = new Set<Promise<unknown>>();
  const hanging = new Set<ServerResponse>();

  /** The fault for this call (counting it down), or ok. */
  function nextFault(): SimFaultMode {
    const mode = faults.mode;
    if (faults.count !== undefined) {
      if (faults.count <= 0) return 'ok';
      faults.count--;
    }
    return mode;
  }

  function sendWebhooks(payment: SimPayment): void {
    if (!options.webhookSecret || (!options.webhookUrl && !options.deliver)) return;
    const secret = options.webhookSecret;
    const body = JSON.stringify({
      idempotencyKey: payment.idempotencyKey,
      paymentId: payment.paymentId,
      status: 'paid',
    });
    for (let i = 0; i < faults.duplicateWebhooks; i++) {
      const sent = (async () => {
        const signature = await signWebhook(secret, body);
        webhooksSent++;
        if (options.deliver) return options.deliver(body, signature);
        return fetch(options.webhookUrl!, {
          method: 'POST',
          headers: { 'content-type': 'application/json', [WEBHOOK_SIGNATURE_HEADER]: signature },
          body,
        });
      })().catch(() => undefined);
      inFlight.add(sent);
      void sent.finally(() => inFlight.delete(sent));
    }
  }

  async function pay(req: IncomingMessage, res: ServerResponse): Promise<void> {
    calls++;
    const fault = nextFault();
    const body = await readBody(req);
    if (faults.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, faults.latencyMs));
    if (req.headers.authorization !== `Bearer ${options.key}`) return json(res, 401, { error: 'unauthorized' });
    const key = req.headers['idempotency-key'];
    if (typeof key !== 'string' || key.length === 0) return json(res, 400, { error: 'Idempotency-Key required' });
    let request: { applicationId?: unknown; amount?: unknown };
    try {
      request = JSON.parse(body);
    } catch {
      return json(res, 400, { error: 'body is not JSON' });
    }
    if (typeof request.amount !== 'number' || !(request.amount > 0) || typeof request.applicationId !== 'string') {
      return json(res, 400, { error: 'amount and applicationId required' });
    }
    if (fault === 'error') return json(res, 503, { error: 'simulated outage' });
    if (fault === 'refuse') return json(res, 422, { error: 'simulated refusal: the account is closed' });
    if (fault === 'hang') {
      hanging.add(res);
      res.on('close', () => hanging.delete(res));
      return;
    }
    const known = payments.get(key);
    if (known && known.amount !== request.amount) {
      return json(res, 422, { error: 'this Idempotency-Key was used with another amount' });
    }
    let payment = known;
    if (payment) repeats++;
    else {
      payment = {
        idempotencyKey: key,
        paymentId: `pay_${crypto.randomUUID()}`,
        applicationId: request.applicationId,
        amount: request.amount,
        paidAt: new Date().toISOString(),
        ...(typeof req.headers.traceparent === 'string' ? { traceparent: req.headers.traceparent } : {}),
      };
      payments.set(key, payment);
    }
    if (fault === 'lose') req.socket.destroy();
    else json(res, 200, { paymentId: payment.paymentId, paidAt: payment.paidAt, status: 'paid' });
    if (!known) sendWebhooks(payment);
  }

  const state = (): SimState => ({
    calls,
    repeats,
    payments: [...payments.values()],
    webhooksSent,
    faults: { ...faults },
  });

  const server = createServer((req, res) => {
    const route = `${req.method} ${req.url?.split('?')[0]}`;
    const handle = async () => {
      if (route === 'POST /payments') return pay(req, res);
      if (route === 'GET /admin/state') return json(res, 200, state());
      if (route === 'POST /admin/faults') {
        faults = { ...defaults(), ...JSON.parse((await readBody(req)) || '{}') };
        return json(res, 200, faults);
      }
      if (route === 'POST /admin/reset') {
        payments.clear();
        calls = repeats = webhooksSent = 0;
        faults = defaults();
        return json(res, 200, state());
      }
      json(res, 404, { error: 'not found' });
    };
    handle().catch((error) => {
      if (!res.headersSent && !res.destroyed) json(res, 500, { error: String(error) });
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    setFaults(next) {
      faults = { ...defaults(), ...next };
    },
    async settled() {
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const env = process.env;
  const sim = await startPaymentProviderSim({
    port: Number(env.PORT ?? 4010),
    key: env.PAYMENT_PROVIDER_KEY ?? 'dev-payment-provider-key',
    ...(env.PAYMENT_WEBHOOK_SECRET ? { webhookSecret: env.PAYMENT_WEBHOOK_SECRET } : {}),
    ...(env.PAYMENT_WEBHOOK_URL ? { webhookUrl: env.PAYMENT_WEBHOOK_URL } : {}),
    faults: {
      mode: (env.SIM_FAULT as SimFaultMode | undefined) ?? 'ok',
      latencyMs: Number(env.SIM_LATENCY_MS ?? 0),
      duplicateWebhooks: Number(env.SIM_DUPLICATE_WEBHOOKS ?? 1),
    },
  });
  console.log(`payment provider simulator on ${sim.url} (POST /payments; GET /admin/state; POST /admin/faults)`);
  const stop = () => void sim.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
