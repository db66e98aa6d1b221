{{/* Names, labels and the pieces every Tollgate container shares. */}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Settings every Tollgate container reads: database, config file, logs, extras. */}}
{{- define "tollgate.commonEnv" -}}
- name: TOLLGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
- name: TOLLGATE_CONFIG
  value: /etc/tollgate/tollgate.yaml
- name: TOLLGATE_DATA_DIR
  value: /var/lib/tollgate
- name: HOME
  value: /var/lib/tollgate
- name: TOLLGATE_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: TOLLGATE_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The config file, a writable data dir and /tmp (the root filesystem is read-only). */}}
{{- define "tollgate.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/tollgate/tollgate.yaml
  subPath: tollgate.yaml
  readOnly: true
- name: data
  mountPath: /var/lib/tollgate
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "tollgate.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "tollgate.fullname" . }}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* Connector credentials: whole Secrets as environment variables or as files. Only the
containers that apply the change log get them. */}}
{{- define "tollgate.connectorSecretEnvFrom" -}}
{{- with .Values.connectorSecrets.env }}
envFrom:
  {{- range . }}
  - secretRef:
      name: {{ .name }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "tollgate.connectorSecretMounts" -}}
{{- range $i, $s := .Values.connectorSecrets.files }}
- name: connector-secret-{{ $i }}
  mountPath: {{ $s.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "tollgate.connectorSecretVolumes" -}}
{{- range $i, $s := .Values.connectorSecrets.files }}
- name: connector-secret-{{ $i }}
  secret:
    secretName: {{ $s.name }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "tollgate.egress" -}}
{{- with .Values.networkPolicy.egress }}
egress:
  - ports:
      - {port: 53, protocol: UDP}
      - {port: 53, protocol: TCP}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
