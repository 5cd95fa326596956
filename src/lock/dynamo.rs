//! The DynamoDB lock table: condition expressions, attribute mapping, error classification.
//!
//! Item layout (partition key `key`, type S):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `key` | S | the locked key |
//! | `owner` | S | host or pod name of the holder |
//! | `cluster` | S | the holder's `--cluster`, when given |
//! | `run` | S | random id of the holding run; removed by `unlock --force` |
//! | `fence` | N | fencing token, +1 on every acquisition |
//! | `acquired` | N | acquisition time, Unix ns |
//! | `expire` | N | end of the current lease, Unix ns (the Go tool's attribute) |
//! | `deadline` | N | hard cap: acquisition + `--expire`, Unix ns |
//! | `ttl` | N | Unix seconds, a day after `deadline`, for DynamoDB TTL |

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::{Acquire, Claim, Holding, LockRecord, LockStore, StoreError};

/// The free-or-lapsed condition. `attribute_not_exists(expire)` keeps a malformed item
/// from locking a key forever; `expire < :now` is exactly the Go tool's test, so both
/// tools exclude each other during a migration.
const FREE: &str = "attribute_not_exists(#key) OR attribute_not_exists(#expire) OR #expire < :now";

/// The "this exact run" condition every write after the acquire carries.
const OURS: &str = "#run = :run AND #fence = :fence AND #owner = :owner";

/// A [`LockStore`] on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    /// The SDK client, configured with timeouts and retries by [`crate::aws`].
    client: Client,
    /// Table name.
    table: String,
}

impl DynamoStore {
    /// A store on `table` through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// The SDK client, for maintenance commands.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn update(
        &self,
        key: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("key", s(key))
    }

    /// A conditional write on our own lock setting `expire`; shared by renew and release.
    /// With `retry` false the SDK makes one attempt: the lease task retries renewals
    /// itself, with a fresh `expire` and a short backoff instead of the SDK's
    /// throttling backoff of up to seconds.
    async fn set_expire(
        &self,
        holding: &Holding,
        expire_ns: i64,
        retry: bool,
    ) -> Result<(), StoreError> {
        let req = self
            .update(&holding.key)
            .update_expression("SET #expire = :expire")
            .condition_expression(OURS)
            .expression_attribute_names("#expire", "expire")
            .expression_attribute_names("#run", "run")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":expire", n(expire_ns))
            .expression_attribute_values(":run", s(&holding.run))
            .expression_attribute_values(":fence", n(holding.fence))
            .expression_attribute_values(":owner", s(&holding.owner));
        let res = if retry {
            req.send().await
        } else {
            req.customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default()
                        .retry_config(RetryConfig::disabled()),
                )
                .send()
                .await
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Lost),
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }
}

impl LockStore for DynamoStore {
    async fn acquire(&self, claim: &Claim) -> Result<Acquire, StoreError> {
        // One write that tests, claims and bumps the fence, returning the new item.
        let mut set = "SET #owner = :owner, #run = :run, #acquired = :now, #expire = :expire, \
                       #deadline = :deadline, #ttl = :ttl"
            .to_string();
        let mut req = self
            .update(&claim.key)
            .condition_expression(FREE)
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#run", "run")
            .expression_attribute_names("#acquired", "acquired")
            .expression_attribute_names("#expire", "expire")
            .expression_attribute_names("#deadline", "deadline")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#fence", "fence")
            .expression_attribute_names("#cluster", "cluster")
            .expression_attribute_values(":owner", s(&claim.owner))
            .expression_attribute_values(":run", s(&claim.run))
            .expression_attribute_values(":now", n(claim.now_ns))
            .expression_attribute_values(":expire", n(claim.expire_ns))
            .expression_attribute_values(":deadline", n(claim.deadline_ns))
            .expression_attribute_values(":ttl", n(claim.ttl_secs()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match &claim.cluster {
            Some(c) => {
                set.push_str(", #cluster = :cluster");
                req = req.expression_attribute_values(":cluster", s(c));
                req = req.update_expression(format!("{set} ADD #fence :one"));
            }
            // A previous holder's cluster must not be left on our item.
            None => req = req.update_expression(format!("{set} REMOVE #cluster ADD #fence :one")),
        }
        match req.send().await {
            Ok(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                let record = record_from(&claim.key, &item);
                Ok(Acquire::Acquired(Holding {
                    key: claim.key.clone(),
                    owner: claim.owner.clone(),
                    run: claim.run.clone(),
                    fence: record.fence.unwrap_or(1),
                }))
            }
            Err(e) if is_condition_failure(&e) => {
                // moto returns the holder's item here; dynalite does not, so read it.
                let old = match old_item(&e) {
                    Some(item) => Some(record_from(&claim.key, item)),
                    None => self.get(&claim.key).await?,
                };
                match old {
                    // Our own earlier attempt won and its answer was lost; the SDK retried.
                    Some(r) if r.run.as_deref() == Some(claim.run.as_str()) => {
                        Ok(Acquire::Acquired(Holding {
                            key: claim.key.clone(),
                            owner: claim.owner.clone(),
                            run: claim.run.clone(),
                            fence: r.fence.unwrap_or(1),
                        }))
                    }
                    other => Ok(Acquire::Held(other)),
                }
            }
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }

    async fn renew(&self, holding: &Holding, expire_ns: i64) -> Result<(), StoreError> {
        self.set_expire(holding, expire_ns, false).await
    }

    async fn release(&self, holding: &Holding, expire_ns: i64) -> Result<(), StoreError> {
        self.set_expire(holding, expire_ns, true).await
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, &self.table, "GetItem"))?;
        Ok(out.item().map(|item| record_from(key, item)))
    }

    async fn force_release(
        &self,
        key: &str,
        now_ns: i64,
    ) -> Result<Option<LockRecord>, StoreError> {
        let res = self
            .update(key)
            .update_expression("SET #expire = :now REMOVE #run")
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#expire", "expire")
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":now", n(now_ns))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(record_from(
                key,
                out.attributes().unwrap_or(&HashMap::new()),
            ))),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(classify(e, &self.table, "UpdateItem")),
        }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
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

/// Maps an item to a record, tolerating missing or malformed attributes.
pub fn record_from(key: &str, item: &HashMap<String, AttributeValue>) -> LockRecord {
    let string = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    LockRecord {
        key: key.to_string(),
        owner: string("owner"),
        cluster: string("cluster"),
        run: string("run"),
        fence: number("fence").and_then(|f| u64::try_from(f).ok()),
        acquired_ns: number("acquired"),
        expire_ns: number("expire"),
        deadline_ns: number("deadline"),
    }
}

/// Turns an SDK error into a [`StoreError`] a user can act on.
pub fn classify<E>(err: SdkError<E, HttpResponse>, table: &str, action: &'static str) -> StoreError
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
        let code = match code.as_str() {
            "AccessDenied" => "AccessDeniedException",
            other => other,
        };
        // The service error's own message, not the SdkError's "service error".
        let detail = format!("{code}: {message}");
        return match code {
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
        };
    }
    let detail = error_chain(&err);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("credential") {
        return StoreError::NoCredentials { detail };
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
