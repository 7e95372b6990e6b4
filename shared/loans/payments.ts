// The payment provider: the HTTP call that moves a disbursement's money, and the provider's signed callback.
// Runtime-neutral (fetch and Web Crypto only: Node, Deno, workerd). The call carries the loan's payment
// identity as its Idempotency-Key, so the provider pays a loan at most once however often we ask: every
// retry, resume and duplicate request below is safe for that reason alone.
//
// Guards (cockatiel), outermost first:
//   retry      time-outs, network errors and 5xx only (the call is idempotent by key), exponential backoff;
//              never a 4xx (the provider refused: asking again gets the same answer) nor an open breaker
//   breaker    shared by every call of this process; opens after PAYMENT_BREAKER_FAILURES consecutive
//              failed attempts and then fails fast (no call at all) until PAYMENT_BREAKER_HALF_OPEN_MS have
//              passed; then one probe: success closes it, failure opens it again
//   timeout    each attempt is aborted after PAYMENT_TIMEOUT_MS
// Outcomes and breaker states go to hooks (api/metrics.ts exports them on Node; shared/ stays prom-client free).
// Each attempt is a CLIENT span (while tracing is on) whose context goes to the provider in `traceparent`.
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  retry,
  TaskCancelledError,
  TimeoutStrategy,
  timeout,
  wrap,
} from 'cockatiel';
import { injectHeaders, inSpan, SpanKind } from '../core/tracing.ts';

export type PaymentOutcome = 'paid' | 'refused' | 'timeout' | 'server_error' | 'network_error' | 'breaker_open';
export type BreakerState = 'closed' | 'open' | 'half_open' | 'isolated';

/** What a process counts about its provider calls (read by /metrics at scrape time). */
export interface PaymentStats {
  /** Attempts by outcome (each retry is an attempt; breaker_open: a call refused without being made). */
  outcomes: Record<PaymentOutcome, number>;
  breaker: BreakerState;
  /** Times the breaker opened. */
  breakerOpened: number;
}

export const newPaymentStats = (): PaymentStats => ({
  outcomes: { paid: 0, refused: 0, timeout: 0, server_error: 0, network_error: 0, breaker_open: 0 },
  breaker: 'closed',
  breakerOpened: 0,
});

export interface PaymentRequest {
  /** The loan's payment identity (disbursement:<applicationId>): the provider's Idempotency-Key. */
  idempotencyKey: string;
  applicationId: string;
  amount: number;
  /** The key the client sent to /disburse, for the provider's records. */
  reference: string;
}

export interface PaymentReceipt {
  paymentId: string;
  paidAt: string;
}

/** The provider could not be reached or did not answer: the payment may or may not exist. Ask again later. */
export class PaymentUnavailableError extends Error {
  readonly outcome: PaymentOutcome;
  constructor(outcome: PaymentOutcome, message: string) {
    super(message);
    this.name = 'PaymentUnavailableError';
    this.outcome = outcome;
  }
}

/** The provider answered 4xx: it will not pay this request as it stands. */
export class PaymentRefusedError extends Error {
  readonly status: number;
  readonly detail: string;
  constructor(status: number, detail: string) {
    super(`payment provider refused the payment (${status}): ${detail}`);
    this.name = 'PaymentRefusedError';
    this.status = status;
    this.detail = detail;
  }
}

/** An attempt that may be retried (time-out, network error, 5xx). */
class TransientError extends Error {
  readonly outcome: PaymentOutcome;
  constructor(outcome: PaymentOutcome, message: string) {
    super(message);
    this.outcome = outcome;
  }
}

export interface PaymentProviderOptions {
  /** Base URL; the client POSTs to <url>/payments. */
  url: string;
  /** Sent as `Authorization: Bearer <key>`. */
  key: string;
  timeoutMs?: number;
  /** Attempts per call, the first included. */
  maxAttempts?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  breakerFailures?: number;
  breakerHalfOpenMs?: number;
  stats?: PaymentStats;
  fetch?: typeof fetch;
}

const breakerStates: Record<CircuitState, BreakerState> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half_open',
  [CircuitState.Isolated]: 'isolated',
};

export class PaymentProvider {
  readonly stats: PaymentStats;
  private readonly url: string;
  private readonly key: string;
  private readonly fetch: typeof fetch;
  private readonly policy;

  constructor(options: PaymentProviderOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.key = options.key;
    this.fetch = options.fetch ?? ((...args) => fetch(...args));
    this.stats = options.stats ?? newPaymentStats();
    const transient = handleWhen((error) => error instanceof TransientError || error instanceof TaskCancelledError);
    const breaker = circuitBreaker(transient, {
      halfOpenAfter: options.breakerHalfOpenMs ?? 10_000,
      breaker: new ConsecutiveBreaker(options.breakerFailures ?? 5),
    });
    breaker.onStateChange((state) => {
      this.stats.breaker = breakerStates[state];
      if (state === CircuitState.Open) this.stats.breakerOpened++;
    });
    const retries = retry(transient, {
      maxAttempts: Math.max(0, (options.maxAttempts ?? 3) - 1),
      backoff: new ExponentialBackoff({
        initialDelay: options.backoffInitialMs ?? 100,
        maxDelay: options.backoffMaxMs ?? 1_000,
      }),
    });
    this.policy = wrap(retries, breaker, timeout(options.timeoutMs ?? 2_000, TimeoutStrategy.Aggressive));
  }

  /**
   * Pays once per idempotency key: a receipt, PaymentRefusedError (4xx, not retried) or
   * PaymentUnavailableError (time-outs, network errors and 5xx after the retries, or the breaker open).
   */
  async pay(request: PaymentRequest, signal?: AbortSignal): Promise<PaymentReceipt> {
    try {
      return await this.policy.execute(({ signal: each, attempt }) => this.attempt(request, each, attempt), signal);
    } catch (error) {
      if (error instanceof BrokenCircuitError) {
        this.stats.outcomes.breaker_open++;
        throw new PaymentUnavailableError('breaker_open', 'payment provider circuit is open');
      }
      if (error instanceof TransientError) throw new PaymentUnavailableError(error.outcome, error.message);
      if (error instanceof TaskCancelledError) {
        throw new PaymentUnavailableError('timeout', 'payment provider timed out');
      }
      throw error;
    }
  }

  private attempt(request: PaymentRequest, signal: AbortSignal, attempt: number): Promise<PaymentReceipt> {
    const url = `${this.url}/payments`;
    const attributes = {
      'http.request.method': 'POST',
      'url.full': url,
      'server.address': new URL(url).hostname,
      ...(attempt > 0 ? { 'http.request.resend_count': attempt } : {}),
    };
    return inSpan('POST', { kind: SpanKind.CLIENT, attributes }, async (span) => {
      const receipt = await this.send(url, request, signal, (status) =>
        span?.setAttribute('http.response.status_code', status),
      );
      span?.setAttribute('loan_admin.payment.id', receipt.paymentId);
      return receipt;
    });
  }

  private async send(
    url: string,
    request: PaymentRequest,
    signal: AbortSignal,
    answered: (status: number) => void,
  ): Promise<PaymentReceipt> {
    let response: Response;
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.key}`,
      'content-type': 'application/json',
      'idempotency-key': request.idempotencyKey,
    };
    injectHeaders(headers);
    try {
      response = await this.fetch(url, { method: 'POST', headers, body: JSON.stringify(request), signal });
    } catch (error) {
      if (signal.aborted) {
        this.stats.outcomes.timeout++;
        throw new TaskCancelledError('payment provider timed out');
      }
      this.stats.outcomes.network_error++;
      throw new TransientError('network_error', `payment provider unreachable: ${(error as Error).message}`);
    }
    answered(response.status);
    const text = await response.text().catch(() => '');
    if (response.status >= 500) {
      this.stats.outcomes.server_error++;
      throw new TransientError('server_error', `payment provider answered ${response.status}`);
    }
    if (!response.ok) {
      this.stats.outcomes.refused++;
      throw new PaymentRefusedError(response.status, text.slice(0, 200));
    }
    let body: { paymentId?: unknown; paidAt?: unknown };
    try {
      body = JSON.parse(text);
    } catch {
      this.stats.outcomes.server_error++;
      throw new TransientError('server_error', 'payment provider answered 2xx without JSON');
    }
    if (typeof body.paymentId !== 'string') {
      this.stats.outcomes.server_error++;
      throw new TransientError('server_error', 'payment provider answered without a paymentId');
    }
    this.stats.outcomes.paid++;
    return { paymentId: body.paymentId, paidAt: typeof body.paidAt === 'string' ? body.paidAt : '' };
  }
}

// ---- The provider's callback ------------------------------------------------------------------------

/** The signature header of POST /api/payments/webhook: `sha256=<hex HMAC-SHA256 of the raw body>`. */
export const WEBHOOK_SIGNATURE_HEADER = 'x-payment-signature';

const encoder = new TextEncoder();

async function hmacKey(secret: string, usage: 'sign' | 'verify'): Promise<CryptoKey> {
  return crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [usage]);
}

/** The header value for a body (the simulator and tests sign with it). */
export async function signWebhook(secret: string, body: string): Promise<string> {
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', await hmacKey(secret, 'sign'), encoder.encode(body)));
  return `sha256=${Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * Whether the header signs the raw body. Compared by crypto.subtle.verify, which checks the MAC in
 * constant time (the header is parsed, not compared, before it).
 */
export async function verifyWebhook(secret: string, body: string, header: string | undefined): Promise<boolean> {
  const hex = /^sha256=([0-9a-f]{64})$/i.exec(header?.trim() ?? '')?.[1];
  if (!hex) return false;
  const mac = new Uint8Array(32);
  for (let i = 0; i < 32; i++) mac[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return crypto.subtle.verify('HMAC', await hmacKey(secret, 'verify'), mac, encoder.encode(body));
}
