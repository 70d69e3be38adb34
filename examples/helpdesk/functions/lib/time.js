// Small helpers shared by the helpdesk's functions (a bundle's own module).
export function hoursSince(iso, now) {
  return Math.floor((now - Date.parse(iso)) / 3600000);
}
