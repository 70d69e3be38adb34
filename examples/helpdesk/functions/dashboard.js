// An SLA dashboard for the signed-in agent's tenant. Nothing here names a tenant: `db` is
// bound to the tenant the platform resolved for this request.
import { db, config } from "bulkhead";
import { hoursSince } from "./lib/time.js";

export async function summary() {
  const slaHours = await config.get("sla_hours");
  const open = await db.count("ticket", { status: "open" });
  const pending = await db.count("ticket", { status: "pending" });
  const page = await db
    .query("ticket")
    .where({ status: "open" })
    .orderBy("prio")
    .limit(20)
    .fetch();
  const now = Date.now();
  const overdue = page.records
    .map((t) => ({ id: t.id, title: t.title, prio: t.prio, age_hours: hoursSince(t.created_at, now) }))
    .filter((t) => t.age_hours >= slaHours);
  return { open, pending, sla_hours: slaHours, oldest_open: page.records.slice(0, 5).map((t) => t.title), overdue };
}
