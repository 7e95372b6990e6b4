// A span per MongoDB command, from the driver's command monitoring (MongoClient `monitorCommands: true`,
// set only while tracing is on). A command gets a span only under a recording span (a request, a job run,
// an enqueue, a disbursement): the pollers and heartbeats that run outside any of them stay untraced, or
// each would be a trace of its own every second. The command's body is never recorded (it holds
// applicants' data); its name and collection are.
import type { CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent, MongoClient } from 'mongodb';
import { failSpan, recordingSpan, SpanKind, tracer } from './tracing.ts';

type CommandSpan = ReturnType<ReturnType<typeof tracer>['startSpan']>;

/** Starts listening; returns how to stop. */
export function traceCommands(client: MongoClient): () => void {
  const open = new Map<number, CommandSpan>();
  const started = (event: CommandStartedEvent) => {
    if (!recordingSpan()) return;
    const target = event.command[event.commandName];
    const collection = typeof target === 'string' ? target : undefined;
    const span = tracer().startSpan(`${event.commandName}${collection ? ` ${collection}` : ''}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        'db.system.name': 'mongodb',
        'db.namespace': event.databaseName,
        'db.operation.name': event.commandName,
        ...(collection ? { 'db.collection.name': collection } : {}),
        'server.address': event.address,
      },
    });
    open.set(event.requestId, span);
  };
  const succeeded = (event: CommandSucceededEvent) => {
    open.get(event.requestId)?.end();
    open.delete(event.requestId);
  };
  const failed = (event: CommandFailedEvent) => {
    const span = open.get(event.requestId);
    if (!span) return;
    failSpan(span, event.failure);
    span.end();
    open.delete(event.requestId);
  };
  client.on('commandStarted', started);
  client.on('commandSucceeded', succeeded);
  client.on('commandFailed', failed);
  return () => {
    client.off('commandStarted', started);
    client.off('commandSucceeded', succeeded);
    client.off('commandFailed', failed);
    for (const span of open.values()) span.end();
    open.clear();
  };
}
