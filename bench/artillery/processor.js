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

/** After reading one application: edit it in `editShare` of the rounds, with the version read. */
export function decideEdit(_request, response, context, _events, done) {
  context.vars.edit = 0;
  if (response.statusCode === 200 && Math.random() < Number(context.vars.editShare)) {
    try {
      const application = JSON.parse(response.body);
      context.vars.version = application.version;
      context.vars.loanAmount = 1000 + Math.floor(Math.random() * 1000) * 100;
      context.vars.edit = 1;
    } catch {}
  }
  return done();
}
