// Package manifest_test checks the Kubernetes manifests in deploy/kubernetes:
// every document decodes strictly (unknown or duplicate fields are errors)
// into the Kubernetes API types, and the pieces are wired together: the
// configuration in each ConfigMap passes credswap's own validation, and
// its listener, admin port, files and credential path match the
// Deployment's ports, probes, volume mounts, Secrets and Vault Agent
// annotations. It is its own module so the main module does not depend
// on k8s.io; scripts/test.sh runs it.
package manifest_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/credswap/credswap/config"
)

// manifests holds every object of deploy/kubernetes, by file.
type manifests struct {
	configMaps    map[string][]*corev1.ConfigMap
	deployments   map[string][]*appsv1.Deployment
	services      map[string][]*corev1.Service
	accounts      map[string][]*corev1.ServiceAccount
	podMonitors   map[string][]*monitoringv1.PodMonitor
	documentsIn   map[string]int
	kubernetesDir string
}

// load decodes every YAML document under deploy/kubernetes strictly.
func load(t *testing.T) *manifests {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{
		configMaps: map[string][]*corev1.ConfigMap{}, deployments: map[string][]*appsv1.Deployment{},
		services: map[string][]*corev1.Service{}, accounts: map[string][]*corev1.ServiceAccount{},
		podMonitors: map[string][]*monitoringv1.PodMonitor{}, documentsIn: map[string]int{}, kubernetesDir: dir,
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "manifest_test" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			where := fmt.Sprintf("%s document %d", rel, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			m.documentsIn[rel]++
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				m.configMaps[rel] = append(m.configMaps[rel], o)
				obj = o
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				m.deployments[rel] = append(m.deployments[rel], o)
				obj = o
			case "v1 Service":
				o := &corev1.Service{}
				m.services[rel] = append(m.services[rel], o)
				obj = o
			case "v1 ServiceAccount":
				o := &corev1.ServiceAccount{}
				m.accounts[rel] = append(m.accounts[rel], o)
				obj = o
			case "monitoring.coreos.com/v1 PodMonitor":
				o := &monitoringv1.PodMonitor{}
				m.podMonitors[rel] = append(m.podMonitors[rel], o)
				obj = o
			default:
				t.Errorf("%s: kind %s %s is not one the test knows", where, tm.APIVersion, tm.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s (%s): %v", where, tm.Kind, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// TestManifestsDecode checks that every file holds what the kit promises.
func TestManifestsDecode(t *testing.T) {
	m := load(t)
	want := map[string]int{
		"kubernetes-secret/configmap.yaml": 1, "kubernetes-secret/deployment.yaml": 1,
		"vault-agent/configmap.yaml": 1, "vault-agent/deployment.yaml": 2,
		"podmonitor.yaml": 1, "demo-postgres.yaml": 2,
	}
	for f, n := range want {
		if m.documentsIn[f] != n {
			t.Errorf("%s: %d documents, want %d", f, m.documentsIn[f], n)
		}
	}
	for f := range m.documentsIn {
		if _, ok := want[f]; !ok {
			t.Errorf("%s is not checked by this test", f)
		}
	}
}

// The memory figures of bench/README.md and docs/operations.md ("Sizing"):
// credswap's resident memory at start and per idle session (default GOGC).
const (
	baseRSS          = 20 << 20
	perIdleSession   = 19 << 10
	cpuRequestMillis = 100
)

func TestSidecarVariants(t *testing.T) {
	m := load(t)
	for _, variant := range []string{"kubernetes-secret", "vault-agent"} {
		t.Run(variant, func(t *testing.T) {
			cms := m.configMaps[variant+"/configmap.yaml"]
			deps := m.deployments[variant+"/deployment.yaml"]
			if len(cms) != 1 || len(deps) != 1 {
				t.Fatalf("want one ConfigMap and one Deployment, have %d and %d", len(cms), len(deps))
			}
			checkSidecar(t, m, variant, cms[0], deps[0])
		})
	}
}

func checkSidecar(t *testing.T, m *manifests, variant string, cm *corev1.ConfigMap, dep *appsv1.Deployment) {
	spec := dep.Spec.Template.Spec
	cs := container(spec.Containers, "credswap")
	app := container(spec.Containers, "app")
	if cs == nil || app == nil {
		t.Fatalf("containers %v: want credswap and app", names(spec.Containers))
	}

	// The configuration: mounted where the container's arguments read it,
	// and valid for credswap.
	wantArgs := []string{"run", "--config", "/etc/credswap/credswap.yaml"}
	if !slices.Equal(cs.Args, wantArgs) {
		t.Errorf("credswap args %q, want %q", cs.Args, wantArgs)
	}
	cfgVol := volumeAt(t, spec, cs, "/etc/credswap")
	if cfgVol == nil || cfgVol.ConfigMap == nil || cfgVol.ConfigMap.Name != cm.Name {
		t.Fatalf("/etc/credswap is not the ConfigMap %s: %+v", cm.Name, cfgVol)
	}
	text, ok := cm.Data["credswap.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no credswap.yaml", cm.Name)
	}
	cfg, err := config.Parse([]byte(text), config.ParseOptions{BaseDir: "/etc/credswap", LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("the ConfigMap's credswap.yaml is not a valid configuration:\n%v", err)
	}
	if len(cfg.Backends) != 1 {
		t.Fatalf("%d backends, the manifests are written for one", len(cfg.Backends))
	}
	b := cfg.Backends[0]

	// Admin API: the declared port, the probes, the scrape annotations.
	_, adminPort := hostPort(t, cfg.Admin.Listen)
	admin := port(cs, "admin")
	if admin == nil || int(admin.ContainerPort) != adminPort {
		t.Errorf("credswap port admin %+v, the configuration listens on %d", admin, adminPort)
	}
	if cfg.Admin.TokenFile == "" {
		t.Error("admin listens beyond loopback without token_file")
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"startup": {cs.StartupProbe, "/healthz"}, "readiness": {cs.ReadinessProbe, "/readyz"}, "liveness": {cs.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("credswap %s probe: want an HTTP GET of %s", name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || resolvePort(cs, p.probe.HTTPGet.Port) != adminPort {
			t.Errorf("credswap %s probe: GET %s on %s, want %s on the admin port %d", name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, adminPort)
		}
	}
	ann := dep.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(adminPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v do not name the admin port %d and /metrics", ann, adminPort)
	}
	for f, pms := range m.podMonitors {
		for _, pm := range pms {
			sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
				t.Errorf("%s: PodMonitor %s does not select the pods (%v)", f, pm.Name, err)
			}
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				if ep.Port == nil || port(cs, *ep.Port) == nil || ep.Path != "/metrics" {
					t.Errorf("%s: PodMonitor endpoint %+v is not credswap's admin port and /metrics", f, ep)
				}
			}
		}
	}

	// The application: to credswap's listener on loopback, as the local
	// user, with the password credswap checks.
	host, listenPort := hostPort(t, b.Listen)
	if host != "127.0.0.1" {
		t.Errorf("backend listens on %s: a sidecar serves its own pod only (127.0.0.1)", b.Listen)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range app.Env {
		env[e.Name] = e
	}
	if env["PGHOST"].Value != "127.0.0.1" || env["PGPORT"].Value != strconv.Itoa(listenPort) || env["PGUSER"].Value != b.Clients[0].User {
		t.Errorf("app connects to %s:%s as %s, credswap listens on %s for %s", env["PGHOST"].Value, env["PGPORT"].Value, env["PGUSER"].Value, b.Listen, b.Clients[0].User)
	}
	pw := env["PGPASSWORD"].ValueFrom
	if pw == nil || pw.SecretKeyRef == nil {
		t.Fatal("app's PGPASSWORD is not from a Secret")
	}
	secret, key := secretFile(t, spec, cs, b.Clients[0].PasswordFile)
	if pw.SecretKeyRef.Name != secret || pw.SecretKeyRef.Key != key {
		t.Errorf("app's password is %s/%s, credswap checks %s/%s (%s)", pw.SecretKeyRef.Name, pw.SecretKeyRef.Key, secret, key, b.Clients[0].PasswordFile)
	}
	secretFile(t, spec, cs, cfg.Admin.TokenFile)
	if tok := envOf(cs, "CREDSWAP_ADMIN_TOKEN"); tok == nil || tok.ValueFrom == nil || tok.ValueFrom.SecretKeyRef == nil {
		t.Error("credswap has no CREDSWAP_ADMIN_TOKEN for kubectl exec … credswap status")
	} else if ts, tk := secretFile(t, spec, cs, cfg.Admin.TokenFile); tok.ValueFrom.SecretKeyRef.Name != ts || tok.ValueFrom.SecretKeyRef.Key != tk {
		t.Errorf("CREDSWAP_ADMIN_TOKEN is %s/%s, token_file is %s/%s", tok.ValueFrom.SecretKeyRef.Name, tok.ValueFrom.SecretKeyRef.Key, ts, tk)
	}
	if b.Upstream != "orders-db:5432" {
		t.Errorf("upstream %s is not the demo database's Service", b.Upstream)
	}
	svc := m.services["demo-postgres.yaml"]
	if len(svc) != 1 || svc[0].Name != "orders-db" || svc[0].Spec.Ports[0].Port != 5432 {
		t.Errorf("demo-postgres.yaml's Service is not orders-db:5432")
	}

	// The backend credential.
	if b.Credential.Source != "file" {
		t.Fatalf("credential source %s, the manifests provide a file", b.Credential.Source)
	}
	switch variant {
	case "kubernetes-secret":
		// A whole Secret as a directory (username, password); without
		// subPath and items, so the kubelet's ..data swap updates it.
		vm := mountAt(cs, b.Credential.Path)
		if vm == nil || vm.SubPath != "" || vm.SubPathExpr != "" {
			t.Fatalf("credential.path %s is not a volume mount of credswap (without subPath): %+v", b.Credential.Path, vm)
		}
		vol := volume(spec, vm.Name)
		if vol == nil || vol.Secret == nil || len(vol.Secret.Items) != 0 {
			t.Fatalf("credential.path %s is not a whole Secret: %+v", b.Credential.Path, vol)
		}
		if mountOf(app, vm.Name) != nil {
			t.Error("the application mounts the database credential too")
		}
	case "vault-agent":
		dir, file := path.Split(b.Credential.Path)
		if dir != "/vault/secrets/" {
			t.Errorf("credential.path %s is not in the injector's /vault/secrets", b.Credential.Path)
		}
		if ann["vault.hashicorp.com/agent-inject"] != "true" || ann["vault.hashicorp.com/role"] == "" {
			t.Error("no Vault Agent injection with a role")
		}
		if src := ann["vault.hashicorp.com/agent-inject-secret-"+file]; !strings.Contains(src, "/creds/") {
			t.Errorf("no agent-inject-secret-%s for a dynamic database credential: %q", file, src)
		}
		tmpl := ann["vault.hashicorp.com/agent-inject-template-"+file]
		for _, w := range []string{`"username": {{ .Data.username | toJSON }}`, `"password": {{ .Data.password | toJSON }}`} {
			if !strings.Contains(tmpl, w) {
				t.Errorf("template of %s lacks %s", file, w)
			}
		}
		if ann["vault.hashicorp.com/agent-inject-containers"] != "credswap" {
			t.Error("the secrets volume is not limited to the credswap container")
		}
		uid := strconv.FormatInt(*cs.SecurityContext.RunAsUser, 10)
		if ann["vault.hashicorp.com/agent-run-as-user"] != uid || ann["vault.hashicorp.com/agent-inject-perms-"+file] != "0400" {
			t.Errorf("the rendered file is not private to credswap's user %s", uid)
		}
		if spec.ServiceAccountName == "" || len(m.accounts[variant+"/deployment.yaml"]) != 1 || m.accounts[variant+"/deployment.yaml"][0].Name != spec.ServiceAccountName {
			t.Errorf("ServiceAccount %q for the Vault Kubernetes login is not in the manifest", spec.ServiceAccountName)
		}
		if b.OnDeadline != "close" || b.DrainDeadline.D() >= 3*60e9 {
			t.Errorf("drain_deadline %s on_deadline %s: sessions must leave a lease before Vault Agent's renewal window ends (3 minutes of a 1h lease)", b.DrainDeadline.D(), b.OnDeadline)
		}
	}

	// Security contexts and resources.
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", psc)
	}
	if psc != nil && (psc.FSGroup == nil || *psc.FSGroup != *cs.SecurityContext.RunAsGroup) {
		t.Error("fsGroup is not credswap's group: it could not read its Secret files (mode 0440)")
	}
	for _, c := range []*corev1.Container{cs, app} {
		sc := c.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: securityContext %+v: want non-root, read-only root, no privilege escalation, all capabilities dropped", c.Name, sc)
		}
	}
	if *cs.SecurityContext.RunAsUser != 65532 {
		t.Errorf("credswap runs as %d, the image's user is 65532", *cs.SecurityContext.RunAsUser)
	}
	req := cs.Resources.Requests
	memNeed := resource.NewQuantity(int64(baseRSS+b.Limits.MaxClientConns*perIdleSession), resource.BinarySI)
	if req.Memory().Cmp(*memNeed) < 0 {
		t.Errorf("memory request %s is below %s (base plus max_client_conns idle sessions)", req.Memory(), memNeed)
	}
	if req.Cpu().MilliValue() != cpuRequestMillis {
		t.Errorf("cpu request %s, the sizing in the manifest's comment is %dm", req.Cpu(), cpuRequestMillis)
	}
	if lim := cs.Resources.Limits.Memory(); lim.IsZero() || lim.Cmp(*req.Memory()) < 0 {
		t.Errorf("memory limit %s below the request", lim)
	}
	if grace := spec.TerminationGracePeriodSeconds; grace == nil || float64(*grace) <= cfg.ShutdownTimeout.D().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v must exceed shutdown_timeout %s", grace, cfg.ShutdownTimeout.D())
	}
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func port(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	if cp := port(c, p.StrVal); cp != nil {
		return int(cp.ContainerPort)
	}
	return -1
}

func envOf(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

func volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mountAt(c *corev1.Container, mountPath string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == mountPath {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func mountOf(c *corev1.Container, volumeName string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volumeName {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// volumeAt is the volume mounted read-only at mountPath in c.
func volumeAt(t *testing.T, spec corev1.PodSpec, c *corev1.Container, mountPath string) *corev1.Volume {
	t.Helper()
	vm := mountAt(c, mountPath)
	if vm == nil {
		return nil
	}
	if !vm.ReadOnly {
		t.Errorf("%s is mounted writable", mountPath)
	}
	return volume(spec, vm.Name)
}

// secretFile finds the Secret and key that provide file in c's mounts.
func secretFile(t *testing.T, spec corev1.PodSpec, c *corev1.Container, file string) (secret, key string) {
	t.Helper()
	dir, name := path.Split(file)
	vol := volumeAt(t, spec, c, strings.TrimSuffix(dir, "/"))
	if vol == nil || vol.Secret == nil {
		t.Errorf("%s is not in a Secret mounted into %s", file, c.Name)
		return "", ""
	}
	if len(vol.Secret.Items) == 0 {
		return vol.Secret.SecretName, name
	}
	for _, it := range vol.Secret.Items {
		if it.Path == name {
			return vol.Secret.SecretName, it.Key
		}
	}
	t.Errorf("%s: Secret %s has no item for %s", file, vol.Secret.SecretName, name)
	return "", ""
}
