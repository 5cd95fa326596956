variable "table_name" {
  description = "Name of the lock table (lock-exec's --table / LOCK_EXEC_TABLE)."
  type        = string
  default     = "lock-exec"
}

variable "point_in_time_recovery" {
  description = "Enable point-in-time recovery. Lock items are short-lived, so this is rarely worth its cost."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the table from deletion: every cluster's jobs fail (exit 125) without it."
  type        = bool
  default     = true
}

variable "policy_name" {
  description = "Name of the IAM policy with the run/unlock/status permissions. Empty: \"<table_name>-run\"."
  type        = string
  default     = ""
}

variable "key_prefixes" {
  description = "Limit the run policy to keys starting with one of these (dynamodb:LeadingKeys), e.g. [\"team-a/\"]. Empty: every key of the table."
  type        = list(string)
  default     = []
}

variable "irsa_roles" {
  description = <<-EOT
    IAM roles for service accounts (IRSA), one per EKS cluster, keyed by a name
    used in the role name ("<table_name>-<key>"). Each trusts one cluster's OIDC
    provider for one service account and gets the run policy. Set the role ARN
    (output irsa_role_arns) as the chart's serviceAccount.annotations
    "eks.amazonaws.com/role-arn" in that cluster. Empty: no roles.
      oidc_provider_arn: arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>
      oidc_provider_url: the issuer, with or without https://
      namespace:         namespace of the CronJob
      service_account:   service account name (the chart's default: the release fullname)
  EOT
  type = map(object({
    oidc_provider_arn = string
    oidc_provider_url = string
    namespace         = string
    service_account   = string
  }))
  default = {}
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
