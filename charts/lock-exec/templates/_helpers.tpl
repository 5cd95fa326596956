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
