{{/*
Name of the release's objects: the release name, or release-chart when the
release name does not already say sriov-dra. Two node pools are two
releases, so every namespaced and per-release cluster object is named
after the release and they do not collide.
*/}}
{{- define "sriov-dra.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sriov-dra.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sriov-dra.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sriov-dra.serviceAccountName" -}}
{{- default (include "sriov-dra.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The DRA driver name: slices' spec.driver, the classes' CEL, the policy. */}}
{{- define "sriov-dra.driverName" -}}
{{- .Values.nodeConfig.driverName | default "sriov.dra.dev" -}}
{{- end -}}

{{/* Port of the debug API (the probes' target). */}}
{{- define "sriov-dra.debugPort" -}}
{{- splitList ":" (.Values.nodeConfig.debugAddress | default "127.0.0.1:9464") | last -}}
{{- end -}}

{{/*
Host the kubelet probes: the debug API's own address, or loopback when it
listens on every address. With hostNetwork the kubelet's loopback is the
pod's.
*/}}
{{- define "sriov-dra.debugHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" (.Values.nodeConfig.debugAddress | default "127.0.0.1:9464") "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if eq $host "0.0.0.0" -}}127.0.0.1{{- else if eq $host "::" -}}::1{{- else -}}{{ $host }}{{- end -}}
{{- end -}}
