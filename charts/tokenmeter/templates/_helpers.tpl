{{- define "tokenmeter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tokenmeter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenmeter
{{- end -}}

{{- define "tokenmeter.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tokenmeter.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where the agents send OTLP: the OpenTelemetry Collector when enabled, else the collector. */}}
{{- define "tokenmeter.otlpEndpoint" -}}
{{- if .Values.otelCollector.enabled -}}
http://{{ include "tokenmeter.fullname" . }}-otel:4317
{{- else -}}
http://{{ include "tokenmeter.fullname" . }}-collector:{{ .Values.collector.service.grpcPort }}
{{- end -}}
{{- end -}}

{{- define "tokenmeter.agentTokenSecret" -}}
{{- .Values.collector.agentTokenSecret | default (printf "%s-agent-token" (include "tokenmeter.fullname" .)) -}}
{{- end -}}
