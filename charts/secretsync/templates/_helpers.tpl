{{/* The chart name, or nameOverride. */}}
{{- define "secretsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart> (just <release> when it already contains the chart name), or fullnameOverride. */}}
{{- define "secretsync.fullname" -}}
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

{{- define "secretsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secretsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "secretsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "secretsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: secretsync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "secretsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "secretsync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "secretsync.leaseName" -}}
{{- default (include "secretsync.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* The Secret holding the operator's content-hash key, in the release namespace. */}}
{{- define "secretsync.hashKeySecretName" -}}
{{- printf "%s-hash-key" (include "secretsync.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "secretsync.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does in each namespace it watches. Least privilege: every verb below is
one the operator calls (crates/operator/tests/integration/rbac.rs checks this list against
the requests a full journey makes, and fails on a request no rule covers or on a verb on
Secrets that is never used).
*/}}
{{- define "secretsync.namespacedRules" -}}
# SecretSyncs are the controller's input (list/watch). The finalizer is added and removed by
# JSON patch (kube-runtime's finalizer helper); a SecretSync the operator cannot decode is
# read untyped (get) to report it, and its finalizer dropped by merge patch.
# A ClusterSecretSync's SecretSyncs are made and updated by server-side apply (patch; the
# API server asks create of an apply that makes the object) and deleted when their
# namespace is no longer selected.
- apiGroups: ["secretsync.io"]
  resources: ["secretsyncs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Status (versions, rollout, conditions) is written by server-side apply to /status.
- apiGroups: ["secretsync.io"]
  resources: ["secretsyncs/status"]
  verbs: ["patch"]
# SecretStores are cached by a reflector (list/watch) to resolve storeRefs.
- apiGroups: ["secretsync.io"]
  resources: ["secretstores"]
  verbs: ["list", "watch"]
# Store Ready conditions (credentials checked against the backend).
- apiGroups: ["secretsync.io"]
  resources: ["secretstores/status"]
  verbs: ["patch"]
# Secrets: create each version; watch the managed ones (metadata only, by label) and list
# them to recover version numbers; delete versions beyond history, revoked ones, and all of
# them on deletion with deletionPolicy Delete; patch drops the ownerReferences for Retain;
# get reads the credentials a store names (Vault token, AppRole secret-id) and the key its
# event listener route checks requests with (spec.events.secretRef).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "delete", "get", "list", "patch", "watch"]
# Vault Kubernetes auth and Azure Workload Identity: a short-lived token of the
# ServiceAccount a store names.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
# Azure Workload Identity: the client and tenant ids annotated on the ServiceAccount a store
# names (get); before deleting an old version, whether a ServiceAccount's imagePullSecrets
# still name it (list).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list"]
# Rollout targets: cached by reflectors (list/watch); their pod templates are rewritten to
# the active version by patch under the operator's field manager.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["list", "watch", "patch"]
# Argo Rollouts as rollout targets, the same way; watched only when discovery finds the
# CRD, and harmless without it. No `get`: like the other targets they are only listed and
# watched.
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["list", "watch", "patch"]
# Before deleting an old version: is it still referenced by a ReplicaSet, Job, CronJob or
# Pod in the namespace (or a ServiceAccount, above)? (Read once per prune, not watched.)
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
- apiGroups: ["batch"]
  resources: ["jobs", "cronjobs"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Events on SecretSyncs (events.k8s.io/v1), each created once and never changed.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* What the operator needs cluster-wide whatever it watches. */}}
{{- define "secretsync.clusterRules" -}}
# ClusterSecretStores are cluster-scoped: cached by a reflector (list/watch).
- apiGroups: ["secretsync.io"]
  resources: ["clustersecretstores"]
  verbs: ["list", "watch"]
# Store Ready conditions.
- apiGroups: ["secretsync.io"]
  resources: ["clustersecretstores/status"]
  verbs: ["patch"]
# ClusterSecretSyncs are cached by a reflector (list/watch); their status is written by
# server-side apply; the SecretSyncs made carry an ownerReference to their
# ClusterSecretSync with blockOwnerDeletion, which needs update on its finalizers.
- apiGroups: ["secretsync.io"]
  resources: ["clustersecretsyncs"]
  verbs: ["list", "watch"]
- apiGroups: ["secretsync.io"]
  resources: ["clustersecretsyncs/status"]
  verbs: ["patch"]
- apiGroups: ["secretsync.io"]
  resources: ["clustersecretsyncs/finalizers"]
  verbs: ["update"]
# A ClusterSecretStore's namespaceSelector is matched against the SecretSync's namespace
# labels, kept from a metadata watch so a label change takes effect at once.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}
