{{/*
Chart name, truncated to 63 characters (the limit of a DNS label and a label value).
*/}}
{{- define "lock-exec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects. A release whose name already
contains the chart name is not repeated ("lock-exec" not "lock-exec-lock-exec").
CronJob names are kept to 52 characters: the controller appends an 11-character
suffix ("-<minutes since epoch>") to Job names, which must stay within 63.
*/}}
{{- define "lock-exec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "lock-exec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "lock-exec.labels" -}}
helm.sh/chart: {{ include "lock-exec.chart" . }}
{{ include "lock-exec.selectorLabels" . }}
app.kubernetes.io/version: {{ include "lock-exec.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that identify the release's pods.
*/}}
{{- define "lock-exec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lock-exec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The service account the pods run as.
*/}}
{{- define "lock-exec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lock-exec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Tag of the lock-exec image: image.tag, else the chart's appVersion.
*/}}
{{- define "lock-exec.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The lock-exec image reference.
*/}}
{{- define "lock-exec.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "lock-exec.imageTag" .) }}
{{- end }}

{{/*
The lock key: lock.key, else the release fullname. Every cluster that must not
run the job at the same time as another must render the same key.
*/}}
{{- define "lock-exec.key" -}}
{{- .Values.lock.key | default (include "lock-exec.fullname" .) }}
{{- end }}

{{/*
Seconds in a duration string such as "1h30m" or "250ms" (lock-exec's units: ns, us,
ms, s, m, h, d), as a float. The schema has already checked the form.
*/}}
{{- define "lock-exec.seconds" -}}
{{- $total := 0.0 -}}
{{- range (regexFindAll "[0-9]+(ns|us|ms|s|m|h|d)" (toString .) -1) -}}
{{- $n := regexFind "^[0-9]+" . | float64 -}}
{{- $unit := regexFind "(ns|us|ms|s|m|h|d)$" . -}}
{{- $scale := get (dict "ns" 0.000000001 "us" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0) $unit -}}
{{- $total = addf $total (mulf $n $scale) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{/*
lock-exec's own rules for the lease settings, applied at render time so that a value
lock-exec would refuse fails `helm install`, not the pod at 2 a.m. Returns the run's
grace period in seconds (the one lock-exec will use).
*/}}
{{- define "lock-exec.checkTiming" -}}
{{- $l := .Values.lock -}}
{{- $lease := include "lock-exec.seconds" $l.lease | float64 -}}
{{- $expire := include "lock-exec.seconds" $l.expire | float64 -}}
{{- $heartbeat := divf $lease 3.0 -}}
{{- if $l.heartbeat }}{{ $heartbeat = include "lock-exec.seconds" $l.heartbeat | float64 }}{{ end -}}
{{- $grace := minf 10.0 (divf $lease 3.0) -}}
{{- if $l.grace }}{{ $grace = include "lock-exec.seconds" $l.grace | float64 }}{{ end -}}
{{- $skew := minf 1.0 (divf $lease 10.0) -}}
{{- if $l.maxClockSkew }}{{ $skew = include "lock-exec.seconds" $l.maxClockSkew | float64 }}{{ end -}}
{{- $margin := minf 0.25 (divf $lease 20.0) -}}
{{- $minHold := 0.0 -}}
{{- if $l.minHold }}{{ $minHold = include "lock-exec.seconds" $l.minHold | float64 }}{{ end -}}
{{- $max := 315360000.0 -}}
{{- range $name, $v := dict "lock.lease" $lease "lock.expire" $expire "lock.minHold" $minHold "lock.heartbeat" $heartbeat "lock.grace" $grace -}}
{{- if gt $v $max }}{{ fail (printf "%s is too long: at most 3650d (10 years)" $name) }}{{ end -}}
{{- end -}}
{{- if lt $lease 1.0 }}{{ fail (printf "lock.lease %s is too short: it must be at least 1s (lock-exec's rule)" $l.lease) }}{{ end -}}
{{- if lt $heartbeat 0.05 }}{{ fail "lock.heartbeat is too short: at least 50ms (lock-exec's rule)" }}{{ end -}}
{{- if le $grace 0.0 }}{{ fail "lock.grace must be more than 0" }}{{ end -}}
{{- if ge (mulf $heartbeat 2.0) $lease }}{{ fail (printf "lock.heartbeat (%s) must be less than half of lock.lease (%s), so that one lost renewal cannot lapse the lease (lock-exec's rule)" (toString $l.heartbeat) $l.lease) }}{{ end -}}
{{- if ge (addf $heartbeat $grace $skew $margin) $lease }}{{ fail (printf "lock.heartbeat + lock.grace + lock.maxClockSkew + margin (%gs + %gs + %gs + %gs) must be less than lock.lease (%s), or the command could still run when the lease ends (lock-exec's rule)" $heartbeat $grace $skew $margin $l.lease) }}{{ end -}}
{{- if le $expire $lease }}{{ fail (printf "lock.expire (%s) must be longer than lock.lease (%s) (lock-exec's rule)" $l.expire $l.lease) }}{{ end -}}
{{- if gt $minHold $expire }}{{ fail (printf "lock.minHold (%s) must not exceed lock.expire (%s) (lock-exec's rule)" $l.minHold $l.expire) }}{{ end -}}
{{- $grace -}}
{{- end }}

{{/*
activeDeadlineSeconds: the value given, or derived from lock-exec's own limits so that
they fire first: the longest wait, the hard cap, the grace period, plus 5 minutes for
pulling images and starting.
*/}}
{{- define "lock-exec.activeDeadlineSeconds" -}}
{{- $grace := include "lock-exec.checkTiming" . | float64 -}}
{{- $l := .Values.lock -}}
{{- $wait := 0.0 -}}
{{- if $l.wait }}{{ $wait = include "lock-exec.seconds" $l.wait | float64 }}{{ end -}}
{{- $derived := addf $wait (include "lock-exec.seconds" $l.expire | float64) $grace 300.0 | ceil | int64 -}}
{{- if kindIs "invalid" .Values.activeDeadlineSeconds -}}
{{- $derived -}}
{{- else if lt (.Values.activeDeadlineSeconds | int64) $derived -}}
{{- fail (printf "activeDeadlineSeconds (%d) must be at least lock.wait + lock.expire + the grace period + 300 s (%d): otherwise Kubernetes kills the job before lock-exec's hard cap can stop it and release the key; leave it null to derive it" (.Values.activeDeadlineSeconds | int64) $derived) -}}
{{- else -}}
{{- .Values.activeDeadlineSeconds | int64 -}}
{{- end -}}
{{- end }}
