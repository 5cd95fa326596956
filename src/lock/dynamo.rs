//! The DynamoDB lock table: condition expressions, attribute mapping, error classification.
//!
//! Item layout (partition key `key`, type S); times are Unix nanoseconds except `ttl`:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `key` | S | the locked key |
//! | `owner` | S | host or pod name of the holder |
//! | `cluster` | S | the holder's `--cluster`, when given |
//! | `run` | S | random id of the holding run; removed on release and by `unlock --force` |
//! | `fence` | N | fencing token, +1 on every acquisition |
//! | `acquired` | N | acquisition time |
//! | `expire` | N | end of the lease (the Go tool's attribute and unit) |
//! | `deadline` | N | hard cap: acquisition + `--expire` |
//! | `slot` | N | the holding run's slot, when it has one |
//! | `released` | N | when the holder released it (its command had ended) |
//! | `revoked` | N | when `unlock --force` revoked the holding run |
//! | `done_slot`, `done_by`, `done_cluster`, `done_at` | N, S, S, N | the highest completed slot, who completed it and when |
//! | `ttl` | N | Unix seconds, a day after `deadline`, for DynamoDB TTL |

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::{
    Acquire, Claim, Force, Holding, LockRecord, LockStore, Page, Patience, Release, ReleaseOf,
    Released, StoreError, Whole, MAX_WHOLE,
};

/// Free: no item, no numeric lease end, or a lease end before the claimant's clock. The
/// last test is exactly the Go tool's, so both tools exclude each other during a
/// migration; a non-numeric `expire` cannot hold a key forever.
const FREE: &str = "(attribute_not_exists(#key) OR attribute_not_exists(#expire) \
                    OR NOT attribute_type(#expire, :type_n) OR #expire < :now)";

/// A fence that `ADD 1` turns into a usable token.
const FENCE_OK: &str = "(attribute_not_exists(#fence) OR (attribute_type(#fence, :type_n) \
                        AND #fence >= :zero AND #fence < :fence_max))";

/// No completed slot at or above the claim's.
const SLOT_OPEN: &str = "(attribute_not_exists(#done_slot) \
                         OR (attribute_type(#done_slot, :type_n) AND #done_slot < :slot))";

/// This exact run holds the lock.
const OURS: &str = "#run = :run AND #fence = :fence AND #owner = :owner";

/// A fence `ADD 1` keeps within [`MAX_WHOLE`].
const FENCE_MAX: u64 = MAX_WHOLE;

/// A [`LockStore`] on a DynamoDB table.
#[derive(Debug, Clone)]
pub(crate) struct DynamoStore {
    /// The SDK client, configured with timeouts and retries by [`crate::aws`].
    client: Client,
    /// Table name.
    table: String,
}

/// Names (`#name`, mapped to `name`) and values of one request's expressions.
#[derive(Default)]
struct Expr {
    /// `#name` → `name`.
    names: HashMap<String, String>,
    /// `:value` → value.
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// Registers every `#name` token in `text` and returns it, so expressions can be
    /// written with attribute names only.
    fn uses(&mut self, text: &str) -> String {
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#')) {
            if let Some(name) = token.strip_prefix('#') {
                self.names.insert(token.to_string(), name.to_string());
            }
        }
        text.to_string()
    }

    fn s(&mut self, name: &str, v: &str) -> &mut Self {
        self.values
            .insert(name.to_string(), AttributeValue::S(v.to_string()));
        self
    }

    fn n(&mut self, name: &str, v: impl ToString) -> &mut Self {
        self.values
            .insert(name.to_string(), AttributeValue::N(v.to_string()));
        self
    }

    /// Conditions on the fence being as `seen`.
    fn fence_as(&mut self, seen: &Whole) -> String {
        match seen {
            Whole::Valid(f) => {
                self.n(":seen_fence", f);
                self.uses("#fence = :seen_fence")
            }
            Whole::Absent => self.uses("attribute_not_exists(#fence)"),
            // Nobody can acquire an item with a malformed fence (FENCE_OK), so its holder
            // cannot have changed since it was read.
            Whole::Malformed(_) => self.uses("attribute_exists(#fence)"),
        }
    }

    fn apply(self, req: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let req = req.set_expression_attribute_names(Some(self.names));
        if self.values.is_empty() {
            req
        } else {
            req.set_expression_attribute_values(Some(self.values))
        }
    }
}

impl DynamoStore {
    /// A store on `table` through `client`.
    pub(crate) fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// The SDK client, for maintenance commands.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    fn update(&self, key: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_string()))
    }

    /// Sends an update with the given patience.
    async fn send(
        &self,
        req: UpdateItemFluentBuilder,
        patience: Patience,
    ) -> Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<UpdateItemError, HttpResponse>,
    > {
        match patience {
            Patience::Normal => req.send().await,
            Patience::Once(limit) => {
                req.customize()
                    .config_override(
                        aws_sdk_dynamodb::config::Builder::default()
                            .retry_config(RetryConfig::disabled())
                            .timeout_config(
                                TimeoutConfig::builder()
                                    .operation_attempt_timeout(limit)
                                    .operation_timeout(limit)
                                    .build(),
                            ),
                    )
                    .send()
                    .await
            }
        }
    }

    /// Gives back a lock our acquire took but cannot use (its fence is not a whole number).
    async fn abandon(&self, key: &str, run: &str, now_ns: i64) {
        let mut x = Expr::default();
        let update = x.uses("SET #expire = :now, #released = :now REMOVE #run");
        let cond = x.uses("#run = :run");
        x.n(":now", now_ns).s(":run", run);
        let req = x.apply(
            self.update(key)
                .update_expression(update)
                .condition_expression(cond),
        );
        let _ = self.send(req, Patience::Normal).await;
    }
}

impl LockStore for DynamoStore {
    async fn acquire(&self, claim: &Claim) -> Result<Acquire, StoreError> {
        // One write that tests, claims and bumps the fence, returning the new item.
        let mut x = Expr::default();
        let mut set = vec![
            "#owner = :owner",
            "#run = :run",
            "#acquired = :now",
            "#expire = :expire",
            "#deadline = :deadline",
            "#ttl = :ttl",
        ];
        // A previous holder's cluster, slot, release or revocation must not stay on ours.
        let mut remove = vec!["#released", "#revoked"];
        let mut cond = format!("{FREE} AND {FENCE_OK}");
        match &claim.cluster {
            Some(c) => {
                set.push("#cluster = :cluster");
                x.s(":cluster", c);
            }
            None => remove.push("#cluster"),
        }
        match claim.slot {
            Some(slot) => {
                set.push("#slot = :slot");
                x.n(":slot", slot);
                cond = format!("{cond} AND {SLOT_OPEN}");
            }
            None => remove.push("#slot"),
        }
        let update = x.uses(&format!(
            "SET {} REMOVE {} ADD #fence :one",
            set.join(", "),
            remove.join(", ")
        ));
        let cond = x.uses(&cond);
        x.s(":owner", &claim.owner)
            .s(":run", &claim.run)
            .n(":now", claim.now_ns)
            .n(":expire", claim.expire_ns)
            .n(":deadline", claim.deadline_ns)
            .n(":ttl", claim.ttl_secs())
            .n(":one", 1)
            .n(":zero", 0)
            .n(":fence_max", FENCE_MAX)
            .s(":type_n", "N");
        let req = x.apply(
            self.update(&claim.key)
                .update_expression(update)
                .condition_expression(cond)
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                ),
        );
        let stored = match self.send(req, Patience::Normal).await {
            Ok(out) => record_from(&claim.key, out.attributes().unwrap_or(&HashMap::new())),
            Err(e) if is_condition_failure(&e) => {
                // moto returns the holder's item here; dynalite does not, so read it.
                let old = match old_item(&e) {
                    Some(item) => Some(record_from(&claim.key, item)),
                    None => self.get(&claim.key).await?,
                };
                match old {
                    // Our own earlier attempt won and its answer was lost; the SDK
                    // retried. What it stored is what counts.
                    Some(r) if r.run.as_deref() == Some(claim.run.as_str()) => r,
                    other => return Ok(Acquire::Refused(other)),
                }
            }
            Err(e) => return Err(classify(e, &self.table, "UpdateItem")),
        };
        match (stored.fence.valid(), stored.expire_ns, stored.deadline_ns) {
            (Some(fence), Some(expire_ns), Some(deadline_ns)) if fence >= 1 => {
                Ok(Acquire::Acquired {
                    holding: claim.holding(fence),
                    expire_ns,
                    deadline_ns,
                    acquired_ns: stored.acquired_ns.unwrap_or(claim.now_ns),
                })
            }
            // A fraction passes FENCE_OK and stays one after ADD: no usable token. Give
            // the key back at once and report the item as it is.
            _ => {
                self.abandon(&claim.key, &claim.run, claim.now_ns).await;
                Ok(Acquire::Refused(Some(LockRecord {
                    run: None,
                    ..stored
                })))
            }
        }
    }

    async fn renew(
        &self,
        holding: &Holding,
        expire_ns: i64,
        patience: Patience,
    ) -> Result<(), StoreError> {
        let mut x = Expr::default();
        let update = x.uses("SET #expire = :expire");
        // The stored lease end never moves back: a renewal delivered late, after a later
        // one, fails here instead of shortening the lease.
        let cond = x.uses(&format!("{OURS} AND #expire <= :expire"));
        x.n(":expire", expire_ns)
            .s(":run", &holding.run)
            .n(":fence", holding.fence)
            .s(":owner", &holding.owner);
        let req = x.apply(
            self.update(&holding.key)
                .update_expression(update)
                .condition_expression(cond),
        );
        match self.send(req, patience).await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                // Lost, unless it is still ours with a later end already stored.
                match self.get(&holding.key).await {
                    Ok(Some(r))
                        if r.run.as_deref() == Some(holding.run.as_str())
                            && r.fence.valid() == Some(holding.fence)
                            && r.expire_ns.is_some_and(|stored| stored > expire_ns) =>
                    {
                        Err(StoreError::Behind)
                    }
                    _ => Err(StoreError::Lost),
                }
            }
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }

    async fn release(
        &self,
        holding: &Holding,
        release: &Release,
        patience: Patience,
    ) -> Result<Released, StoreError> {
        let mut x = Expr::default();
        let (update, cond) = match release.of {
            ReleaseOf::Own => {
                let mut set = vec!["#expire = :expire", "#released = :now"];
                let mut remove = vec!["#run"];
                if let Some(done) = &release.done {
                    set.extend(["#done_slot = :slot", "#done_by = :owner", "#done_at = :now"]);
                    x.n(":slot", done.slot);
                    match &done.cluster {
                        Some(c) => {
                            set.push("#done_cluster = :cluster");
                            x.s(":cluster", c);
                        }
                        None => remove.push("#done_cluster"),
                    }
                }
                x.s(":run", &holding.run)
                    .s(":owner", &holding.owner)
                    .n(":now", release.now_ns);
                (
                    format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")),
                    OURS.to_string(),
                )
            }
            // Only while the revoked lease still runs: never extends it.
            ReleaseOf::Revoked => (
                "SET #expire = :expire".to_string(),
                "#fence = :fence AND attribute_not_exists(#run) AND attribute_exists(#revoked) \
                 AND #expire > :expire"
                    .to_string(),
            ),
        };
        let update = x.uses(&update);
        let cond = x.uses(&cond);
        x.n(":expire", release.expire_ns).n(":fence", holding.fence);
        let req = x.apply(
            self.update(&holding.key)
                .update_expression(update)
                .condition_expression(cond),
        );
        match self.send(req, patience).await {
            Ok(_) => Ok(Released::Done),
            Err(e) if is_condition_failure(&e) => {
                // The SDK retries a release whose answer was lost; the retry then fails
                // on our own applied release, which is success.
                let r = self.get(&holding.key).await?;
                match r {
                    Some(r)
                        if release.of == ReleaseOf::Own
                            && r.fence.valid() == Some(holding.fence)
                            && r.owner.as_deref() == Some(holding.owner.as_str())
                            && r.run.is_none()
                            && r.released_ns == Some(release.now_ns) =>
                    {
                        Ok(Released::AlreadyDone)
                    }
                    _ => Err(StoreError::Lost),
                }
            }
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, &self.table, "GetItem"))?;
        Ok(out.item().map(|item| record_from(key, item)))
    }

    async fn force(&self, seen: &LockRecord, force: Force, now_ns: i64) -> Result<(), StoreError> {
        let mut x = Expr::default();
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut cond = vec![x.fence_as(&seen.fence)];
        match &seen.run {
            Some(run) => {
                x.s(":seen_run", run);
                cond.push(x.uses("#run = :seen_run"));
            }
            // Not a string, so no run of ours: it goes with the repair.
            None if seen.run_malformed => {
                x.s(":type_s", "S");
                cond.push(x.uses("attribute_exists(#run) AND NOT attribute_type(#run, :type_s)"));
                remove.push("#run");
            }
            None => cond.push(x.uses("attribute_not_exists(#run)")),
        }
        match force {
            Force::Revoke => {
                set.push("#revoked = :now");
                remove.push("#run");
                cond.push(x.uses("#expire >= :now"));
            }
            Force::EndLease => {
                set.push("#expire = :now");
                cond.push(x.uses("#expire >= :now"));
            }
            Force::Repair => {}
        }
        // Whatever else it does, a forced write leaves a well-formed item behind.
        if matches!(seen.fence, Whole::Malformed(_)) {
            set.push("#fence = :zero");
            x.n(":zero", 0);
        }
        if matches!(seen.done_slot, Whole::Malformed(_)) {
            remove.push("#done_slot");
        }
        if set.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut update = String::new();
        if !set.is_empty() {
            update.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let update = x.uses(update.trim());
        let cond = x.uses(&cond.join(" AND "));
        if cond.contains(":now") || update.contains(":now") {
            x.n(":now", now_ns);
        }
        let req = x.apply(
            self.update(&seen.key)
                .update_expression(update)
                .condition_expression(cond),
        );
        match self.send(req, Patience::Normal).await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Changed),
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }

    async fn scan(&self, prefix: &str, start: Option<String>) -> Result<Page, StoreError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true);
        if !prefix.is_empty() {
            req = req
                .filter_expression("begins_with(#key, :prefix)")
                .expression_attribute_names("#key", "key")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()));
        }
        if let Some(start) = start {
            req = req.exclusive_start_key("key", AttributeValue::S(start));
        }
        let out = req
            .send()
            .await
            .map_err(|e| classify(e, &self.table, "Scan"))?;
        let records = out
            .items()
            .iter()
            .filter_map(|item| {
                let key = item.get("key")?.as_s().ok()?;
                Some(record_from(key, item))
            })
            .collect();
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get("key")?.as_s().ok().cloned());
        Ok(Page { records, next })
    }
}

fn is_condition_failure(e: &SdkError<UpdateItemError, HttpResponse>) -> bool {
    matches!(
        e.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

fn old_item(
    e: &SdkError<UpdateItemError, HttpResponse>,
) -> Option<&HashMap<String, AttributeValue>> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item(),
        _ => None,
    }
}

/// Reads a whole number: valid from 0 to [`MAX_WHOLE`], anything else malformed (the
/// same bound the acquire condition sets, so `run`, `status` and `unlock` agree).
fn whole(v: Option<&AttributeValue>) -> Whole {
    match v {
        None => Whole::Absent,
        Some(AttributeValue::N(n)) => match n.trim().parse::<u64>() {
            Ok(v) if v <= MAX_WHOLE => Whole::Valid(v),
            _ => Whole::Malformed(n.clone()),
        },
        Some(other) => Whole::Malformed(format!("{other:?}")),
    }
}

/// Reads a time: any number, as DynamoDB compares it (fractions cut, huge values
/// saturated); other types are no time at all, as the acquire condition treats them.
fn time(v: Option<&AttributeValue>) -> Option<i64> {
    let n = v?.as_n().ok()?.trim();
    n.parse::<i64>()
        .ok()
        .or_else(|| n.parse::<f64>().ok().map(|f| f as i64))
}

/// Maps an item to a record, tolerating missing or malformed attributes.
pub(crate) fn record_from(key: &str, item: &HashMap<String, AttributeValue>) -> LockRecord {
    let string = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let t = |name: &str| time(item.get(name));
    LockRecord {
        key: key.to_string(),
        owner: string("owner"),
        cluster: string("cluster"),
        run: string("run"),
        run_malformed: item.get("run").is_some_and(|v| !v.is_s()),
        fence: whole(item.get("fence")),
        acquired_ns: t("acquired"),
        expire_ns: t("expire"),
        deadline_ns: t("deadline"),
        slot: whole(item.get("slot")).valid(),
        released_ns: t("released"),
        revoked_ns: t("revoked"),
        done_slot: whole(item.get("done_slot")),
        done_by: string("done_by"),
        done_cluster: string("done_cluster"),
        done_ns: t("done_at"),
    }
}

/// Turns an SDK error into a [`StoreError`] a user can act on.
pub(crate) fn classify<E>(
    err: SdkError<E, HttpResponse>,
    table: &str,
    action: &'static str,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(service) = err.as_service_error() {
        let raw = err.raw_response();
        let status = raw.map(|r| r.status().as_u16()).unwrap_or_default();
        let body = raw
            .and_then(|r| r.body().bytes())
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        // Some servers and proxies answer in XML, which the JSON protocol cannot parse:
        // fall back to the HTTP status and the body's own <Code> and <Message>.
        let code = service
            .code()
            .map(str::to_string)
            .or_else(|| xml_tag(&body, "Code"))
            .unwrap_or_else(|| {
                if status == 403 {
                    "AccessDeniedException".into()
                } else {
                    format!("HTTP {status}")
                }
            });
        let message = service
            .message()
            .map(str::to_string)
            .or_else(|| xml_tag(&body, "Message"))
            .unwrap_or_default();
        return classify_service(&code, &message, table, action);
    }
    let detail = error_chain(&err);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("credential provider") && lower.contains("status") {
        return StoreError::CredentialsRefused { detail };
    }
    if lower.contains("credential") {
        return StoreError::NoCredentials { detail };
    }
    if lower.contains("certificate") || lower.contains("tls handshake") {
        return StoreError::Tls { detail };
    }
    match err {
        SdkError::TimeoutError(_) => StoreError::Unreachable {
            detail: format!("no answer in time ({detail})"),
        },
        SdkError::DispatchFailure(ref d) if d.is_io() || d.is_timeout() => {
            StoreError::Unreachable { detail }
        }
        _ => StoreError::Other { action, detail },
    }
}

/// Classifies a service error by its code and message.
fn classify_service(code: &str, message: &str, table: &str, action: &'static str) -> StoreError {
    let code = match code {
        "AccessDenied" => "AccessDeniedException",
        other => other,
    };
    // The service error's own message, not the SdkError's "service error".
    let detail = format!("{code}: {message}");
    match code {
        "ResourceNotFoundException" => StoreError::TableNotFound {
            table: table.to_string(),
        },
        "AccessDeniedException" => StoreError::AccessDenied {
            action,
            table: table.to_string(),
            detail,
        },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken" => StoreError::BadCredentials { detail },
        "ThrottlingException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded" => StoreError::Throttled { detail },
        "ValidationException"
            if detail.contains("key element does not match the schema")
                || detail.contains("Missing the key") =>
        {
            StoreError::KeySchema {
                table: table.to_string(),
                detail,
            }
        }
        _ => StoreError::Other { action, detail },
    }
}

/// The Display of an error and its sources, joined on one line, repeats dropped (the SDK
/// nests errors that print the same text).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// The text of the first `<tag>…</tag>` in an XML error body.
fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    #[test]
    fn items_parse_with_their_units_and_malformations() {
        let item = HashMap::from([
            ("key".to_string(), AttributeValue::S("k".into())),
            ("owner".to_string(), AttributeValue::S("pod".into())),
            ("fence".to_string(), n("7")),
            ("expire".to_string(), n("1700000000123456789")),
            ("done_slot".to_string(), n("29000000")),
            ("run".to_string(), n("12")),
        ]);
        let r = record_from("k", &item);
        assert_eq!(r.owner.as_deref(), Some("pod"));
        assert_eq!(r.fence, Whole::Valid(7));
        assert_eq!(r.expire_ns, Some(1_700_000_000_123_456_789));
        assert_eq!(r.done_slot, Whole::Valid(29_000_000));
        assert_eq!(r.run, None, "a run id that is not a string is no run id");
        assert!(r.run_malformed && r.malformed().unwrap().contains("run"));
        assert_eq!(r.cluster, None);

        assert_eq!(whole(Some(&n("-5"))), Whole::Malformed("-5".into()));
        assert_eq!(whole(Some(&n("2.5"))), Whole::Malformed("2.5".into()));
        assert_eq!(
            whole(Some(&n("9007199254740992"))),
            Whole::Malformed("9007199254740992".into()),
            "2^53: what FENCE_OK refuses"
        );
        assert_eq!(whole(Some(&n("9007199254740991"))), Whole::Valid(MAX_WHOLE));
        assert!(matches!(
            whole(Some(&AttributeValue::S("1".into()))),
            Whole::Malformed(_)
        ));
        // Times compare as DynamoDB compares numbers; a string is no time.
        assert_eq!(time(Some(&n("1e30"))), Some(i64::MAX));
        assert_eq!(time(Some(&n("-3"))), Some(-3));
        assert_eq!(time(Some(&n("1.9"))), Some(1));
        assert_eq!(time(Some(&AttributeValue::S("2030".into()))), None);
    }

    #[test]
    fn service_errors_say_what_to_fix() {
        let e = |code, msg| classify_service(code, msg, "locks", "UpdateItem");
        assert!(matches!(
            e("ResourceNotFoundException", ""),
            StoreError::TableNotFound { .. }
        ));
        assert!(matches!(
            e("AccessDenied", "no"),
            StoreError::AccessDenied {
                action: "UpdateItem",
                ..
            }
        ));
        assert!(matches!(
            e("ExpiredTokenException", ""),
            StoreError::BadCredentials { .. }
        ));
        assert!(matches!(
            e("ProvisionedThroughputExceededException", ""),
            StoreError::Throttled { .. }
        ));
        assert!(matches!(
            e(
                "ValidationException",
                "The provided key element does not match the schema"
            ),
            StoreError::KeySchema { .. }
        ));
        assert!(matches!(
            e("ValidationException", "something else"),
            StoreError::Other { .. }
        ));
        assert!(e("ThrottlingException", "").is_transient());
        assert!(!e("AccessDeniedException", "").is_transient());
    }

    #[test]
    fn xml_bodies_and_expression_names() {
        let body = "<Error><Code>AccessDenied</Code><Message>no way</Message></Error>";
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_tag(body, "Message").as_deref(), Some("no way"));
        assert_eq!(xml_tag(body, "Other"), None);
        let mut x = Expr::default();
        x.uses("SET #expire = :e REMOVE #run, #done_slot");
        let mut names: Vec<_> = x.names.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["#done_slot", "#expire", "#run"]);
    }
}
