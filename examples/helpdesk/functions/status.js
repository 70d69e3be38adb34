// Public: served without credentials on hosts that name the tenant.
export function show() {
  return { app: "helpdesk", ok: true };
}
