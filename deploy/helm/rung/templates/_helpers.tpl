{{/* The chart's name. */}}
{{- define "rung.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: <release>-rung, or the release name if it has "rung". */}}
{{- define "rung.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "rung.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "rung.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "controller"). */}}
{{- define "rung.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rung.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The controller's resources (StatefulSet, Service). */}}
{{- define "rung.controller.fullname" -}}
{{- printf "%s-controller" (include "rung.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the token. */}}
{{- define "rung.token.secretName" -}}
{{- default (printf "%s-token" (include "rung.fullname" .)) .Values.token.existingSecret }}
{{- end }}

{{/* The URL agents reach the controller at. */}}
{{- define "rung.controller.url" -}}
{{- if .Values.agent.controllerUrl }}
{{- .Values.agent.controllerUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "rung.controller.fullname" .) .Release.Namespace (int .Values.controller.port) }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "image" .Values.controller.image "root" $). */}}
{{- define "rung.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The S3 variables, for the controller and the agents alike (a list of env entries). */}}
{{- define "rung.s3.env" -}}
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* The token volume of both pods. */}}
{{- define "rung.token.volume" -}}
- name: token
  secret:
    secretName: {{ include "rung.token.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.token.key }}
        path: token
{{- end }}
