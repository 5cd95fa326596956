# The lock-exec DynamoDB table, the least-privilege policy that `lock-exec run`,
# `unlock` and `status` need, and optional IRSA roles, one per EKS cluster.
# All clusters that share a job use ONE table in ONE region.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

resource "aws_dynamodb_table" "lock" {
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "key"

  attribute {
    name = "key"
    type = "S"
  }

  # DynamoDB deletes items whose "ttl" (Unix seconds) has passed, within a day
  # or two; lock-exec never relies on that for correctness, it only keeps the
  # table from filling up with keys that are no longer used.
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  deletion_protection_enabled = var.deletion_protection

  tags = var.tags
}

# Only the calls lock-exec run/unlock/status make. With key_prefixes, only keys that
# start with one of them: one team's jobs cannot lock or unlock another's.
data "aws_iam_policy_document" "run" {
  statement {
    sid = "LockExecRunUnlockStatus"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.lock.arn]

    dynamic "condition" {
      for_each = length(var.key_prefixes) > 0 ? [1] : []
      content {
        test     = "ForAllValues:StringLike"
        variable = "dynamodb:LeadingKeys"
        values   = [for p in var.key_prefixes : "${p}*"]
      }
    }
  }
}

# `lock-exec list` scans the whole table; a LeadingKeys condition cannot limit a Scan,
# so this is a separate policy for operators, never for jobs.
data "aws_iam_policy_document" "list" {
  statement {
    sid       = "LockExecList"
    actions   = ["dynamodb:Scan"]
    resources = [aws_dynamodb_table.lock.arn]
  }
}

resource "aws_iam_policy" "list" {
  name        = "${var.table_name}-list"
  description = "lock-exec list on the ${var.table_name} table (operators)"
  policy      = data.aws_iam_policy_document.list.json
  tags        = var.tags
}

resource "aws_iam_policy" "run" {
  name        = var.policy_name != "" ? var.policy_name : "${var.table_name}-run"
  description = "lock-exec run/unlock/status on the ${var.table_name} table"
  policy      = data.aws_iam_policy_document.run.json
  tags        = var.tags
}

locals {
  # IAM condition keys name the issuer without its scheme.
  irsa_issuers = { for name, r in var.irsa_roles : name => trimprefix(r.oidc_provider_url, "https://") }
}

data "aws_iam_policy_document" "irsa_trust" {
  for_each = var.irsa_roles

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [each.value.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.irsa_issuers[each.key]}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.irsa_issuers[each.key]}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = var.irsa_roles

  name               = "${var.table_name}-${each.key}"
  description        = "lock-exec in ${each.value.namespace}/${each.value.service_account} (${each.key})"
  assume_role_policy = data.aws_iam_policy_document.irsa_trust[each.key].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "irsa" {
  for_each = var.irsa_roles

  role       = aws_iam_role.irsa[each.key].name
  policy_arn = aws_iam_policy.run.arn
}
