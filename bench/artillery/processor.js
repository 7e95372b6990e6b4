// Hooks for bench/artillery/working-day.yml (Artillery loads this file with import()).
// Every hook keeps the virtual user's state in context.vars, as Artillery expects.

/** A page of pending work: 1, 2 or 3. */
export function choosePage(context, _events, done) {
  context.vars.page = 1 + Math.floor(Math.random() * 3);
  context.vars.applicationId = '';
  context.vars.edit = 0;
  return done();
}

/** Picks one application of the page just read; none when the page was not answered. */
export function pickApplication(_request, response, context, _events, done) {
  context.vars.applicationId = '';
  if (response.statusCode === 200) {
    try {
      const items = JSON.parse(response.body).items ?? [];
      const item = items[Math.floor(Math.random() * items.length)];
      if (item?._id) context.vars.applicationId = item._id;
    } catch {}
  }
  return done();
}

/** The applicant fields an edit changes (PUT and PATCH alike), one at random. */
const editedFields = {
  loanAmount: () => 1000 + Math.floor(Math.random() * 1000) * 100,
  monthlyIncome: () => 2000 + Math.floor(Math.random() * 100) * 50,
  termMonths: () => 12 * (1 + Math.floor(Math.random() * 30)),
  purpose: () => `purpose ${Math.floor(Math.random() * 1e6)}`,
  applicantName: () => `Applicant ${Math.floor(Math.random() * 1e6)}`,
};

/**
 * After reading one application: edit it in `editShare` of the rounds, from the version read, by
 * `editMethod`: `put` (the whole version must still hold) or `patch` (a JSON Merge Patch of the one
 * field, merged over others' changes to other fields). Counts each edit sent as `edits.sent`.
 */
export function decideEdit(_request, response, context, events, done) {
  context.vars.edit = 0;
  context.vars.patchBody = '';
  if (response.statusCode === 200 && Math.random() < Number(context.vars.editShare)) {
    try {
      const application = JSON.parse(response.body);
      const names = Object.keys(editedFields);
      const field = names[Math.floor(Math.random() * names.length)];
      const value = editedFields[field]();
      context.vars.version = application.version;
      if (context.vars.editMethod === 'patch') context.vars.patchBody = JSON.stringify({ [field]: value });
      else context.vars.editBody = { [field]: value, version: application.version };
      context.vars.edit = context.vars.editMethod === 'patch' ? 0 : 1;
      events.emit('counter', 'edits.sent', 1);
    } catch {}
  }
  return done();
}

/** The PUT's JSON body, as decideEdit made it (an object, not a template). */
export function putEditBody(requestParams, context, _events, done) {
  requestParams.json = context.vars.editBody;
  return done();
}

/** Counts each refused edit by its error code (`edits.409.merge_conflict`, `edits.409.conflict`, ...). */
export function countRefusal(_request, response, _context, events, done) {
  if (response.statusCode === 409) {
    let code = 'unknown';
    try {
      code = JSON.parse(response.body).error.code;
    } catch {}
    events.emit('counter', `edits.409.${code}`, 1);
  }
  return done();
}
