// Print the accounts fleetml marks at risk of failing.
//
//   FLEETML_URL=http://127.0.0.1:8000 FLEETML_KEY=... node example.mjs
import { connect, FleetmlError, predictions } from "./fleetml.mjs";

const url = process.env.FLEETML_URL ?? "http://127.0.0.1:8000";
const key = process.env.FLEETML_KEY;
if (!key) {
  console.error(
    "set FLEETML_KEY to an API key with role ops or admin (fleetml keys create --role ops)",
  );
  process.exit(2);
}

try {
  const atRisk = await predictions(connect({ url, key }), { atRisk: true });
  if (atRisk.length === 0) {
    console.log("no account is at risk");
  }
  for (const p of atRisk) {
    const { account_id: accountId, ...rest } = p;
    console.log(`${accountId}\t${JSON.stringify(rest)}`);
  }
} catch (err) {
  if (err instanceof FleetmlError) {
    console.error(`fleetml answered ${err.status}: ${err.detail}`);
  } else {
    console.error(`cannot reach fleetml at ${url}: ${err.cause?.message ?? err.message}`);
  }
  process.exit(1);
}
