// PATCH /api/applications/{id}: a JSON Merge Patch (RFC 7396) merged field by field over the changes made
// since its base version (shared/loans/applications/patches.ts). PUT keeps its exact-version semantics.
import { createRoute, type OpenAPIHono, type RouteHandler, z } from '@hono/zod-openapi';
import {
  ApplicationPatches,
  applicationPatchShape,
  leavesOf,
  type PatchBase,
} from '../../shared/loans/applications.ts';
import { type AppEnv, requirePermission } from '../auth.ts';
import { etagOf, parseIfMatch } from '../headers.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, ErrorBody, errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';
import { ApplicationJson, toJson } from './applications.ts';

/** The one media type PATCH takes (RFC 7396); anything else is 415 before the body is read. */
export const MERGE_PATCH_TYPE = 'application/merge-patch+json';
export const isMergePatchType = (type: string | undefined) =>
  /^application\/merge-patch\+json\s*(;|$)/i.test(type ?? '');
export const notMergePatch = () =>
  new HttpError(415, 'unsupported_media_type', 'Send the patch as application/merge-patch+json.');
/** The requests that take a merge patch: PATCH of one application (other PATCH routes take JSON). */
export const isMergePatch = (method: string, path: string) =>
  method === 'PATCH' && /^\/api\/applications\/[^/]+\/?$/.test(path);

const ApplicationPatch = z
  .object({
    ...applicationPatchShape,
    baseVersion: applicationPatchShape.baseVersion.meta({
      description: 'the version the patch was made against; or send it as If-Match: "<version>"',
    }),
    notes: applicationPatchShape.notes.meta({
      description:
        'notes keyed by an id the client picks ([A-Za-z0-9_-]{1,64}); null deletes one; each note merges alone',
    }),
    checklist: applicationPatchShape.checklist.meta({
      description: 'review checklist items keyed by name; each item merges alone',
    }),
  })
  .strict()
  .openapi('ApplicationPatch');

const MergedApplication = ApplicationJson.extend({
  mergedOver: z
    .array(z.object({ version: z.number().int(), by: z.string(), at: z.string(), paths: z.array(z.string()) }))
    .openapi({ description: 'the changes made since the base version that this patch was merged over' }),
}).openapi('MergedApplication');

const at = '2026-12-02T21:00:00.000Z';
const conflictExample = {
  error: {
    code: 'merge_conflict',
    message: 'changed since version 7 by someone else: contact.phone',
    details: {
      baseVersion: 7,
      version: 9,
      conflicts: [
        {
          path: 'contact.phone',
          theirPath: 'contact.phone',
          base: '+44 20 7946 0000',
          theirs: '+44 20 7946 0111',
          by: 'ADM-2',
          at,
          version: 8,
          yours: '+44 20 7946 0999',
        },
      ],
    },
  },
  current: { _id: 'APP-5f0c6c3e-8d0b-4a8e-9a53-0f6a3d1b2c4d', version: 9 },
};
const tooOldExample = {
  error: {
    code: 'merge_base_too_old',
    message:
      'the changes since version 3 are no longer kept (the oldest base that merges is 20); reload and patch again',
    details: { baseVersion: 3, oldestMergeableBase: 20, version: 120 },
  },
};

const patchRoute = createRoute({
  method: 'patch',
  path: '/api/applications/{id}',
  tags: ['applications'],
  summary: 'Merge a JSON Merge Patch into an application over the changes made since its base version',
  description:
    'RFC 7396 (Content-Type: application/merge-patch+json, else 415). The base version comes from If-Match ' +
    '("<version>", one tag) or baseVersion (neither: 428; both and different: 400). The patch is cut into ' +
    'paths (applicant fields, contact.<field>, notes.<id>, checklist.<item>, status); null deletes. It is ' +
    'applied when no path it sets was changed since the base (two paths overlap when one is or lies inside ' +
    'the other): 200 with the new version and mergedOver, the changes it merged over. Otherwise 409 ' +
    'merge_conflict naming each overlap with the base value, the other value, who set it and when, and ' +
    'yours; 409 merge_base_too_old when the base is older than the MERGE_HISTORY_VERSIONS kept; 412 ' +
    '(If-Match) or 409 (baseVersion) when the base is newer than the application. A status in the patch ' +
    'obeys the state machine, the permissions and four eyes exactly as PUT, and collides with any change ' +
    'since the base to the status, the applicant fields or the evidence (documents, OCR, recommendation).',
  ...signedIn('applications:read'),
  request: {
    params: ApplicationIdParam,
    headers: z.object({ 'if-match': z.string().max(1024).optional().openapi({ description: '"<version>"' }) }),
    body: {
      required: true,
      content: {
        [MERGE_PATCH_TYPE]: {
          schema: ApplicationPatch,
          examples: {
            phone: { summary: 'fix the phone', value: { baseVersion: 7, contact: { phone: '+44 20 7946 0999' } } },
            note: {
              summary: 'add a note',
              value: { baseVersion: 7, notes: { 'n-1f3a': { text: 'Called the applicant' } } },
            },
          },
        },
      },
    },
  },
  responses: {
    200: {
      description: 'Merged: the application after the change (ETag: its version) and the changes merged over',
      headers: { ETag: { schema: { type: 'string' as const }, description: 'the new version, quoted' } },
      content: {
        'application/json': {
          schema: MergedApplication,
          example: {
            _id: 'APP-5f0c6c3e-8d0b-4a8e-9a53-0f6a3d1b2c4d',
            version: 9,
            contact: { phone: '+44 20 7946 0999' },
            mergedOver: [{ version: 8, by: 'ADM-2', at, paths: ['notes.n-77c0'] }],
          },
        },
      },
    },
    409: {
      description:
        'merge_conflict (the overlaps, for a three-way view) or merge_base_too_old; current is the document now',
      content: {
        'application/json': {
          schema: ErrorBody,
          examples: { merge_conflict: { value: conflictExample }, merge_base_too_old: { value: tooOldExample } },
        },
      },
    },
    ...errorResponses(400, 401, 403, 404, 412, 413, 415, 428, 429),
  },
});

/** The base version from If-Match (one strong tag) and/or baseVersion: 400 when they disagree, 428 for neither. */
export function patchBaseOf(baseVersion: number | undefined, ifMatch: string | undefined): PatchBase {
  let tagged: number | undefined;
  if (ifMatch !== undefined) {
    const parsed = parseIfMatch(ifMatch);
    if (parsed === null || parsed === '*' || parsed.length !== 1) {
      throw new HttpError(400, 'validation', 'If-Match on PATCH must name exactly one version: "<version>".', [
        { path: 'if-match', message: 'one strong entity tag' },
      ]);
    }
    tagged = parsed[0];
  }
  if (tagged !== undefined && baseVersion !== undefined && tagged !== baseVersion) {
    throw new HttpError(400, 'validation', `If-Match names version ${tagged} but baseVersion is ${baseVersion}.`, [
      { path: 'baseVersion', message: 'must equal the If-Match version' },
    ]);
  }
  if (tagged !== undefined) return { version: tagged, from: 'if-match' };
  if (baseVersion !== undefined) return { version: baseVersion, from: 'body' };
  throw new HttpError(428, 'precondition_required', 'Send the version you patched (If-Match or baseVersion).');
}

function patchHandler(patches: ApplicationPatches): RouteHandler<typeof patchRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    // A PATCH that came without a body (the body check lets it reach the session check first).
    if (!isMergePatchType(c.req.header('content-type'))) throw notMergePatch();
    const body = c.req.valid('json');
    // Permissions come from the body, before anything touches the database.
    if (body.status) requirePermission(c, `status:${body.status}`);
    if (leavesOf(body).length > 0) requirePermission(c, 'applications:edit');
    const base = patchBaseOf(body.baseVersion, c.req.header('if-match'));
    const { baseVersion: _base, ...patch } = body;
    const actor = { id: c.get('auth').sub, requestId: c.get('requestId') };
    const { app, mergedOver } = await patches.patch(id, patch, base, actor);
    c.header('ETag', etagOf(app.version));
    const merged = mergedOver.map((change) => ({ ...change, at: change.at.toISOString() }));
    return c.json({ ...toJson(app), mergedOver: merged }, 200);
  };
}

export function applicationPatchRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const patches = new ApplicationPatches(services.db, {
    clock: services.clock,
    queue: services.queue,
    listCache: services.listCache,
    fourEyes: services.config.FOUR_EYES,
    historyVersions: services.config.MERGE_HISTORY_VERSIONS,
  });
  app.openapi(patchRoute, patchHandler(patches));
}
