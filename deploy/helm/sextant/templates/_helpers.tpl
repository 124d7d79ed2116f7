{{/* Names ---------------------------------------------------------------- */}}

{{- define "sextant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; every object's name starts with it. */}}
{{- define "sextant.fullname" -}}
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

{{/* Name of a part: (dict "root" $ "component" "mesh-core"). */}}
{{- define "sextant.componentName" -}}
{{- printf "%s-%s" (include "sextant.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sextant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------
Both take (dict "root" $ "component" "mesh-core"); component may be "". */}}

{{- define "sextant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sextant.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "sextant.labels" -}}
helm.sh/chart: {{ include "sextant.chart" .root }}
{{ include "sextant.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sextant
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The services ------------------------------------------------------------
What the chart knows of each service: its values key, its ports (fixed: the
addresses are passed as flags) and which port serves /healthz, /readyz and
/metrics. */}}
{{- define "sextant.components" -}}
telemetry-mixer:
  key: telemetryMixer
  httpPort: 7701
  ports:
    - name: http
      containerPort: 7701
weight-calculator:
  key: weightCalculator
  httpPort: 7712
  ports:
    - name: kitex
      containerPort: 7702
    - name: http
      containerPort: 7712
mesh-core:
  key: meshCore
  httpPort: 7703
  kitexPort: 7713
  ports:
    - name: http
      containerPort: 7703
    - name: kitex
      containerPort: 7713
    - name: poll
      containerPort: 7733
    - name: xds
      containerPort: 7723
config-center:
  key: configCenter
  httpPort: 7704
  ports:
    - name: http
      containerPort: 7704
{{- end }}

{{/* The order services are rendered in. */}}
{{- define "sextant.componentOrder" -}}
["telemetry-mixer", "weight-calculator", "mesh-core", "config-center"]
{{- end }}

{{/* Images ------------------------------------------------------------------ */}}

{{- define "sextant.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "sextant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sextant.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* etcd and InfluxDB -------------------------------------------------------- */}}

{{/* Comma-separated etcd client endpoints: the bundled members or etcd.endpoints. */}}
{{- define "sextant.etcdEndpoints" -}}
{{- if .Values.etcd.bundled.enabled }}
{{- $name := include "sextant.componentName" (dict "root" . "component" "etcd") }}
{{- $eps := list }}
{{- range $i := until (int .Values.etcd.bundled.replicas) }}
{{- $eps = append $eps (printf "%s-%d.%s-headless.%s.svc:2379" $name $i $name $.Release.Namespace) }}
{{- end }}
{{- join "," $eps }}
{{- else }}
{{- if not .Values.etcd.endpoints }}
{{- fail "etcd.endpoints is empty: name the client endpoints of an etcd cluster, or set etcd.bundled.enabled=true" }}
{{- end }}
{{- join "," .Values.etcd.endpoints }}
{{- end }}
{{- end }}

{{- define "sextant.influxURL" -}}
{{- if .Values.influxdb.bundled.enabled }}
{{- printf "http://%s.%s.svc:8086" (include "sextant.componentName" (dict "root" . "component" "influxdb")) .Release.Namespace }}
{{- else }}
{{- if not .Values.influxdb.url }}
{{- fail "influxdb.enabled needs influxdb.url (an existing InfluxDB) or influxdb.bundled.enabled=true" }}
{{- end }}
{{- .Values.influxdb.url }}
{{- end }}
{{- end }}

{{/* Whether the services write time series to InfluxDB. */}}
{{- define "sextant.influxEnabled" -}}
{{- if or .Values.influxdb.enabled .Values.influxdb.bundled.enabled }}true{{ end }}
{{- end }}

{{/* config-center auth ------------------------------------------------------- */}}

{{- define "sextant.authSecretName" -}}
{{- default (include "sextant.componentName" (dict "root" . "component" "auth")) .Values.auth.existingSecret }}
{{- end }}

{{- define "sextant.pkiSecretName" -}}
{{- default (include "sextant.componentName" (dict "root" . "component" "pki")) .Values.pki.existingSecret }}
{{- end }}

{{/* Whether config-center gets a tokens file. */}}
{{- define "sextant.tokensFileEnabled" -}}
{{- if or .Values.auth.tokensFile.enabled .Values.auth.tokensFile.tokens }}true{{ end }}
{{- end }}

{{/* Settings -------------------------------------------------------------------
The environment of a service, as ConfigMap data: the chart's settings, then
the user's settings (flag names become SEXTANT_<FLAG>).
Takes (dict "root" $ "component" "mesh-core"). */}}
{{- define "sextant.settingsData" -}}
{{- $root := .root }}
{{- $c := index (include "sextant.components" $root | fromYaml) .component }}
{{- $v := index $root.Values $c.key }}
{{- $env := dict }}
{{- $_ := set $env "SEXTANT_ETCD_ENDPOINTS" (include "sextant.etcdEndpoints" $root) }}
{{- $_ = set $env "SEXTANT_ETCD_PREFIX" $root.Values.etcd.prefix }}
{{- if $root.Values.etcd.tls.enabled }}
{{- if $root.Values.etcd.bundled.enabled }}
{{- fail "etcd.tls.enabled is for an etcd of your own (etcd.endpoints): the bundled etcd serves plain HTTP" }}
{{- end }}
{{- $_ = set $env "SEXTANT_ETCD_CA_FILE" (printf "/etc/sextant/etcd-tls/%s" $root.Values.etcd.tls.caKey) }}
{{- $_ = set $env "SEXTANT_ETCD_CERT_FILE" (printf "/etc/sextant/etcd-tls/%s" $root.Values.etcd.tls.certKey) }}
{{- $_ = set $env "SEXTANT_ETCD_KEY_FILE" (printf "/etc/sextant/etcd-tls/%s" $root.Values.etcd.tls.keyKey) }}
{{- end }}
{{- if include "sextant.influxEnabled" $root }}
{{- $_ = set $env "SEXTANT_INFLUX_URL" (include "sextant.influxURL" $root) }}
{{- $_ = set $env "SEXTANT_INFLUX_DB" $root.Values.influxdb.database }}
{{- with $root.Values.influxdb.retentionPolicy }}
{{- $_ = set $env "SEXTANT_INFLUX_RP" . }}
{{- end }}
{{- end }}
{{- if eq .component "mesh-core" }}
{{- with $v.peering }}
{{- if .export }}
{{- $_ = set $env "SEXTANT_EXPORT" (join "," .export) }}
{{- end }}
{{- if .peers }}
{{- $peers := list }}
{{- $files := list }}
{{- range .peers }}
{{- $peers = append $peers (printf "%s=%s" .name .url) }}
{{- $files = append $files (printf "%s=/etc/sextant/peers/%s/token" .name .name) }}
{{- end }}
{{- $_ = set $env "SEXTANT_PEER" (join "," $peers) }}
{{- $_ = set $env "SEXTANT_PEER_TOKEN_FILE" (join "," $files) }}
{{- $_ = set $env "SEXTANT_PEER_TTL" .ttl }}
{{- $_ = set $env "SEXTANT_PEER_WAIT" .wait }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .component "weight-calculator" }}
{{- $_ = set $env "SEXTANT_MESH_CORE_ADDR" (printf "%s.%s.svc:7713" (include "sextant.componentName" (dict "root" $root "component" "mesh-core-kitex")) $root.Release.Namespace) }}
{{- end }}
{{- range $flag, $value := $v.settings }}
{{- $_ = set $env (printf "SEXTANT_%s" ($flag | upper | replace "-" "_")) (include "sextant.scalar" $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* A scalar value as a string. Helm reads numbers in values files as
float64, which would print 4194304 as 4.194304e+06. */}}
{{- define "sextant.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Garbage collection ----------------------------------------------------------
GOGC and GOMEMLIMIT of a service, as container env entries (docs/helm.md):
GOMEMLIMIT is gc.memoryLimit when set, else gc.memoryLimitPercent of
resources.limits.memory, in MiB (none without a limit or at 0 %). A variable
extraEnv sets is left to extraEnv. Takes (dict "root" $ "component" "mesh-core"). */}}
{{- define "sextant.gcEnv" -}}
{{- $c := index (include "sextant.components" .root | fromYaml) .component }}
{{- $v := index .root.Values $c.key }}
{{- $user := dict }}
{{- range $v.extraEnv }}
{{- $_ := set $user .name true }}
{{- end }}
{{- $gc := $v.gc }}
{{- $env := list }}
{{- if and (not (hasKey $user "GOGC")) (ne (toString $gc.gogc) "") }}
{{- $env = append $env (dict "name" "GOGC" "value" (include "sextant.scalar" $gc.gogc)) }}
{{- end }}
{{- $limit := "" }}
{{- if $gc.memoryLimit }}
{{- $limit = $gc.memoryLimit }}
{{- else if and (gt (int $gc.memoryLimitPercent) 0) $v.resources.limits $v.resources.limits.memory }}
{{- $bytes := include "sextant.quantityBytes" (dict "q" $v.resources.limits.memory "where" (printf "%s.resources.limits.memory" $c.key)) | float64 }}
{{- $mib := floor (divf (mulf $bytes (int $gc.memoryLimitPercent)) 104857600) | int64 }}
{{- if lt $mib 1 }}
{{- fail (printf "%s.gc: %d%% of %v is below 1MiB" $c.key (int $gc.memoryLimitPercent) $v.resources.limits.memory) }}
{{- end }}
{{- $limit = printf "%dMiB" $mib }}
{{- end }}
{{- if and $limit (not (hasKey $user "GOMEMLIMIT")) }}
{{- $env = append $env (dict "name" "GOMEMLIMIT" "value" $limit) }}
{{- end }}
{{- with $env }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* A Kubernetes quantity in bytes. Takes (dict "q" quantity "where" "name in values"). */}}
{{- define "sextant.quantityBytes" -}}
{{- $q := .q }}
{{- if kindIs "string" $q }}
{{- $num := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $q }}
{{- $suffix := trimPrefix $num $q }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- if and $num (hasKey $units $suffix) }}
{{- mulf (float64 $num) (index $units $suffix) }}
{{- else if regexMatch "^[0-9.]+[eE][+-]?[0-9]+$" $q }}
{{- float64 $q }}
{{- else }}
{{- fail (printf "%s: %q is not a memory quantity the chart reads (e.g. 512Mi, 2Gi); set gc.memoryLimit instead" .where $q) }}
{{- end }}
{{- else }}
{{- float64 $q }}
{{- end }}
{{- end }}
