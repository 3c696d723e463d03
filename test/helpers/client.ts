/** Helpers for tests of the client library (src/client). */

/**
 * A fetch that, once `view().promoted`, shows the client a promote to `view().next` whose
 * table is not built yet: the listing names that version and no table, and lookups answer
 * with it. Before that, and for every other request, the real server answers.
 */
export function promotedFetch(view: () => { promoted: boolean; next: string }): typeof fetch {
  return async (input, init) => {
    const url = String(input);
    const { promoted, next } = view();
    if (!promoted || !(url.includes("/predict?") || url.endsWith("/tables")))
      return fetch(input, init);
    const response = await fetch(input); // unconditional: the listing's body is changed
    const body = await response.json();
    const changed = url.endsWith("/tables")
      ? { ...body, activeVersion: next, servedVersion: next, latest: null }
      : { ...body, version: next };
    return new Response(JSON.stringify(changed), { status: response.status });
  };
}
