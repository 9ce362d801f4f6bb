{{/* Names and labels. */}}
{{- define "jargate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jargate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "jargate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jargate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "jargate.labels" -}}
{{ include "jargate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "jargate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "jargate.port" -}}
{{ .Values.settings.JARGATE_PORT | default 8000 }}
{{- end -}}

{{- define "jargate.metricsPort" -}}
{{ .Values.settings.JARGATE_METRICS_PORT | default 0 }}
{{- end -}}

{{/* The ConfigMap holding the client registry: an existing one, or the chart's own. */}}
{{- define "jargate.clientsConfigMap" -}}
{{- if .Values.clients.existingConfigMap -}}
{{ .Values.clients.existingConfigMap }}
{{- else if .Values.clients.registry.clients -}}
{{ include "jargate.fullname" . }}-clients
{{- end -}}
{{- end -}}

{{/* Every JARGATE_* variable: the settings map, then what the chart wires itself. */}}
{{- define "jargate.env" -}}
{{- $issuer := required "settings.JARGATE_ISSUER is required: the upstream's own issuer" .Values.settings.JARGATE_ISSUER -}}
{{- include "jargate.validate" . -}}
{{- range $name, $value := .Values.settings }}
{{- if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- if .Values.keys.existingSecret }}
- name: JARGATE_KEYS_FILE
  value: /secrets/jargate-keys/{{ .Values.keys.secretKey }}
{{- end }}
{{- if include "jargate.clientsConfigMap" . }}
- name: JARGATE_CLIENTS_FILE
  value: /config/jargate/{{ .Values.clients.configMapKey }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: JARGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
jargate's container, for this chart's Deployment and for an IdP's own pod spec (the
sidecar shape): `{{ include "jargate.container" .Subcharts.jargate | nindent 8 }}` under
`containers:`, or under `initContainers:` with sidecar.native (Kubernetes >= 1.29).
*/}}
{{- define "jargate.container" -}}
- name: jargate
  image: {{ include "jargate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  env:
    {{- include "jargate.env" . | nindent 4 }}
  ports:
    - name: http
      containerPort: {{ include "jargate.port" . }}
      protocol: TCP
    {{- if ne (include "jargate.metricsPort" .) "0" }}
    - name: metrics
      containerPort: {{ include "jargate.metricsPort" . }}
      protocol: TCP
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: http
    periodSeconds: 10
    timeoutSeconds: 2
  readinessProbe:
    httpGet:
      path: /readyz
      port: http
    periodSeconds: 5
    timeoutSeconds: 3
  startupProbe:
    httpGet:
      path: /healthz
      port: http
    periodSeconds: 1
    failureThreshold: 30
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: jargate-tmp
      mountPath: /tmp
    {{- if .Values.keys.existingSecret }}
    - name: jargate-keys
      mountPath: /secrets/jargate-keys
      readOnly: true
    {{- end }}
    {{- if include "jargate.clientsConfigMap" . }}
    - name: jargate-clients
      mountPath: /config/jargate
      readOnly: true
    {{- end }}
    {{- if .Values.clients.secretsSecret }}
    - name: jargate-client-secrets
      mountPath: /secrets/jargate-clients
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The volumes jargate's container mounts (an emptyDir for /tmp, keys, registry). */}}
{{- define "jargate.volumes" -}}
- name: jargate-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.keys.existingSecret }}
- name: jargate-keys
  secret:
    secretName: {{ .Values.keys.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if include "jargate.clientsConfigMap" . }}
- name: jargate-clients
  configMap:
    name: {{ include "jargate.clientsConfigMap" . }}
{{- end }}
{{- if .Values.clients.secretsSecret }}
- name: jargate-client-secrets
  secret:
    secretName: {{ .Values.clients.secretsSecret }}
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Roll the pods when the configuration changes: the values that make the environment
and the registry ConfigMap. */}}
{{- define "jargate.checksum" -}}
{{ printf "%s%s%s%s%s" (toJson .Values.settings) (toJson .Values.clients) (toJson .Values.keys) (toJson .Values.redis) (toJson .Values.extraEnv) | sha256sum }}
{{- end -}}

{{/* The content of the Secrets and the ConfigMap the pods mount but the chart does not
render, read from the cluster at install and upgrade (empty under helm template). */}}
{{- define "jargate.mountedChecksum" -}}
{{- $ns := .Release.Namespace -}}
{{- $data := list -}}
{{- range $name := list .Values.keys.existingSecret .Values.clients.secretsSecret .Values.redis.existingSecret -}}
{{- if $name -}}
{{- $data = append $data (dig "data" dict (lookup "v1" "Secret" $ns $name)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.clients.existingConfigMap -}}
{{- $data = append $data (dig "data" dict (lookup "v1" "ConfigMap" $ns .Values.clients.existingConfigMap)) -}}
{{- end -}}
{{ toJson $data | sha256sum }}
{{- end -}}

{{/* The checksum annotations of a pod template (checksumAnnotations). */}}
{{- define "jargate.checksumAnnotations" -}}
{{- if .Values.checksumAnnotations -}}
checksum/config: {{ include "jargate.checksum" . }}
checksum/mounted: {{ include "jargate.mountedChecksum" . }}
{{- end -}}
{{- end -}}

{{/* How many standalone pods may run at once. */}}
{{- define "jargate.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{ .Values.autoscaling.maxReplicas }}
{{- else -}}
{{ .Values.replicaCount }}
{{- end -}}
{{- end -}}

{{/* Combinations that break the gateway across replicas fail rendering unless acknowledged. */}}
{{- define "jargate.validate" -}}
{{- if eq .Values.mode "standalone" -}}
{{- $replicas := int (include "jargate.maxReplicas" .) -}}
{{- if and (gt $replicas 1) (not .Values.redis.existingSecret) (not .Values.settings.JARGATE_REDIS_URL) (not .Values.acknowledge.memoryStoreWithReplicas) -}}
{{- fail (printf "up to %d replicas without redis.existingSecret: each pod would keep its own in-memory store, so a request object replayed to another pod is accepted and pushed requests and flows are lost between pods; set redis.existingSecret (or replicaCount: 1), or acknowledge.memoryStoreWithReplicas: true" $replicas) -}}
{{- end -}}
{{- if and (gt $replicas 1) (not .Values.keys.existingSecret) (not .Values.settings.JARGATE_KEYS_FILE) (not .Values.acknowledge.throwAwayKeysWithReplicas) -}}
{{- fail (printf "up to %d replicas without keys.existingSecret: each pod would sign with its own throw-away keys, so clients cannot verify JARM responses from the other pods; set keys.existingSecret (jargate keys generate), or acknowledge.throwAwayKeysWithReplicas: true" $replicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount the standalone pods run as ("" : the namespace's default). */}}
{{- define "jargate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "jargate.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* The labels of the pods jargate runs in: its own Deployment's, or the IdP's (sidecar). */}}
{{- define "jargate.podSelector" -}}
{{- if eq .Values.mode "standalone" -}}
{{ include "jargate.selectorLabels" . }}
{{- else -}}
{{- if not .Values.sidecar.podSelector -}}
{{- fail "sidecar.podSelector is required for the sidecar shape's ServiceMonitor, PodDisruptionBudget and NetworkPolicy: the labels of the IdP's pods" -}}
{{- end -}}
{{ toYaml .Values.sidecar.podSelector }}
{{- end -}}
{{- end -}}
