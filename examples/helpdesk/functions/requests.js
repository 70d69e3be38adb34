// The public request form: anyone on the tenant's host may file a ticket. The route declares
// the body (checked by the platform before this runs) and runs as the `intake` role, which
// may create tickets and read none, whoever calls.
import { db, respond } from "bulkhead";

export async function open(req) {
  const ticket = await db.insert("ticket", {
    title: req.body.title,
    body: req.body.body ?? null,
  });
  return respond(201, { id: ticket.id, title: ticket.title });
}
