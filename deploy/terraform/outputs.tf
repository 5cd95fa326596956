output "table_name" {
  description = "The lock table's name: the chart's lock.table."
  value       = aws_dynamodb_table.lock.name
}

output "table_arn" {
  description = "The lock table's ARN."
  value       = aws_dynamodb_table.lock.arn
}

output "region" {
  description = "The table's region: the chart's lock.region in clusters of other regions."
  value       = split(":", aws_dynamodb_table.lock.arn)[3]
}

output "run_policy_arn" {
  description = "ARN of the IAM policy that lock-exec run/unlock/status need; attach it to your own roles."
  value       = aws_iam_policy.run.arn
}

output "list_policy_arn" {
  description = "ARN of the IAM policy that lock-exec list needs (Scan); for operators, not jobs."
  value       = aws_iam_policy.list.arn
}

output "irsa_role_arns" {
  description = "IRSA role ARN per cluster: the chart's serviceAccount.annotations \"eks.amazonaws.com/role-arn\"."
  value       = { for name, role in aws_iam_role.irsa : name => role.arn }
}
