package v1alpha1

import (
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// evictionSignals are the signals the kubelet's eviction manager knows (pkg/kubelet/eviction/api).
var evictionSignals = []string{"memory.available", "allocatableMemory.available", "nodefs.available", "nodefs.inodesFree",
	"imagefs.available", "imagefs.inodesFree", "containerfs.available", "containerfs.inodesFree", "pid.available"}

// validateKubeletValues applies the kubelet's own value checks (those of its configuration validation and flag
// parsing) to the fields the partial KubeletConfiguration sets, so a bad value fails here, naming the field, and
// not at kubelet start. set holds the fields the document names.
func validateKubeletValues(kc *kubeletv1beta1.KubeletConfiguration, set map[string]json.RawMessage, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	has := func(name string) bool { _, ok := set[name]; return ok }
	nonNegative := func(name string, v int32) {
		if has(name) && v < 0 {
			errs = append(errs, field.Invalid(p.Child(name), v, "must not be negative"))
		}
	}
	port := func(name string, v int32, zeroOK bool) {
		if has(name) && (v < 0 || v > 65535 || v == 0 && !zeroOK) {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be a port, 1-65535"+map[bool]string{true: " (or 0: off)"}[zeroOK]))
		}
	}
	ip := func(name, v string) {
		if has(name) {
			if _, err := netip.ParseAddr(v); err != nil {
				errs = append(errs, field.Invalid(p.Child(name), v, "must be an IP address"))
			}
		}
	}
	deref := func(v *int32) int32 {
		if v == nil {
			return 0
		}
		return *v
	}
	if has("podCIDR") {
		if _, err := netip.ParsePrefix(kc.PodCIDR); err != nil {
			errs = append(errs, field.Invalid(p.Child("podCIDR"), kc.PodCIDR, "must be a CIDR such as 10.244.1.0/24"))
		}
	}
	for i, s := range kc.ClusterDNS {
		if _, err := netip.ParseAddr(s); err != nil {
			errs = append(errs, field.Invalid(p.Child("clusterDNS").Index(i), s, "must be an IP address"))
		}
	}
	nonNegative("maxPods", kc.MaxPods)
	nonNegative("podsPerCore", kc.PodsPerCore)
	nonNegative("kubeAPIQPS", deref(kc.KubeAPIQPS))
	nonNegative("kubeAPIBurst", kc.KubeAPIBurst)
	nonNegative("registryPullQPS", deref(kc.RegistryPullQPS))
	nonNegative("registryBurst", kc.RegistryBurst)
	nonNegative("eventRecordQPS", deref(kc.EventRecordQPS))
	nonNegative("eventBurst", kc.EventBurst)
	high, low := deref(kc.ImageGCHighThresholdPercent), deref(kc.ImageGCLowThresholdPercent)
	for name, v := range map[string]int32{"imageGCHighThresholdPercent": high, "imageGCLowThresholdPercent": low} {
		if has(name) && (v < 0 || v > 100) {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be a percentage, 0-100"))
		}
	}
	if has("imageGCHighThresholdPercent") && has("imageGCLowThresholdPercent") && low >= high && high >= 0 && high <= 100 {
		errs = append(errs, field.Invalid(p.Child("imageGCLowThresholdPercent"), low, "must be below imageGCHighThresholdPercent ("+strconv.Itoa(int(high))+")"))
	}
	port("port", kc.Port, false)
	port("readOnlyPort", kc.ReadOnlyPort, true)
	port("healthzPort", deref(kc.HealthzPort), true)
	ip("address", kc.Address)
	ip("healthzBindAddress", kc.HealthzBindAddress)
	if has("cgroupDriver") && kc.CgroupDriver != "systemd" && kc.CgroupDriver != "cgroupfs" {
		errs = append(errs, field.NotSupported(p.Child("cgroupDriver"), kc.CgroupDriver, []string{"cgroupfs", "systemd"}))
	}
	if has("containerLogMaxFiles") && deref(kc.ContainerLogMaxFiles) < 2 {
		errs = append(errs, field.Invalid(p.Child("containerLogMaxFiles"), deref(kc.ContainerLogMaxFiles), "must be at least 2"))
	}
	for name, thresholds := range map[string]map[string]string{"evictionHard": kc.EvictionHard, "evictionSoft": kc.EvictionSoft} {
		for _, signal := range slices.Sorted(maps.Keys(thresholds)) {
			sp := p.Child(name).Key(signal)
			if !slices.Contains(evictionSignals, signal) {
				errs = append(errs, field.NotSupported(sp, signal, evictionSignals))
				continue
			}
			if msg := evictionThreshold(thresholds[signal]); msg != "" {
				errs = append(errs, field.Invalid(sp, thresholds[signal], msg))
			}
		}
	}
	return errs
}

// evictionThreshold checks a threshold as the kubelet parses it: a percentage (0-100%) or a quantity.
func evictionThreshold(v string) string {
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(pct, 64)
		if err != nil || f < 0 || f > 100 {
			return "want a percentage, 0%-100%"
		}
		return ""
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return "want a quantity (e.g. 200Mi) or a percentage (e.g. 10%)"
	}
	if q.Sign() < 0 {
		return "must not be negative"
	}
	return ""
}
