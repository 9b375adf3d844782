package demo

import (
	"slices"
	"strings"
	"testing"
)

func TestEnviron(t *testing.T) {
	t.Parallel()
	demoVars := []string{"PRICE_STARTER=" + PriceStarter, "PRICE_PRO=" + PricePro, "PRICE_PRO_METERED=" + PriceProMetered}
	tests := []struct {
		name     string
		environ  []string
		want     []string
		wantDemo bool
	}{
		{"nothing set", nil, append(slices.Clone(demoVars), "PLAN_PRO_METER_EVENT="+MeterEvent, "PLAN_PRO_TOKENS_METER_EVENT="+TokensMeterEvent), true},
		{"empty variables are unset", []string{"PRICE_PRO=", "HOME=/root", "PLAN_PRO_METER_EVENT= ", "PLAN_PRO_TOKENS_METER_EVENT="},
			append([]string{"HOME=/root"}, append(slices.Clone(demoVars), "PLAN_PRO_METER_EVENT="+MeterEvent, "PLAN_PRO_TOKENS_METER_EVENT="+TokensMeterEvent)...), true},
		{"own meter events kept", []string{"PLAN_PRO_METER_EVENT=calls", "PLAN_PRO_INCLUDED=5", "PLAN_PRO_TOKENS_METER_EVENT=words"},
			append([]string{"PLAN_PRO_METER_EVENT=calls", "PLAN_PRO_INCLUDED=5", "PLAN_PRO_TOKENS_METER_EVENT=words"}, demoVars...), true},
		{"own prices", []string{"PRICE_STARTER=price_S", "PRICE_PRO=price_P"}, []string{"PRICE_STARTER=price_S", "PRICE_PRO=price_P"}, false},
		{"a metered price alone", []string{"PRICE_PRO_METERED=price_M"}, []string{"PRICE_PRO_METERED=price_M"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := slices.Clone(tt.environ)
			got, demo := Environ(in)
			if !slices.Equal(got, tt.want) || demo != tt.wantDemo {
				t.Errorf("Environ(%q) = %q, %v; want %q, %v", tt.environ, got, demo, tt.want, tt.wantDemo)
			}
			if !slices.Equal(in, tt.environ) {
				t.Errorf("Environ modified its argument: %q", strings.Join(in, " "))
			}
		})
	}
}
