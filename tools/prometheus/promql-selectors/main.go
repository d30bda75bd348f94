// Command promql-selectors reads PromQL expressions, one JSON string per line on stdin, and
// writes for each the vector selectors it uses, as one JSON object per line:
//
//	{"expr": "...", "selectors": [{"metric": "m", "matchers": [{"name": "l", "type": "=", "value": "v"}]}],
//	 "groupings": [{"labels": ["l"], "metrics": ["m"]}]}
//
// (a grouping: the labels of an aggregation's by/without clause and the metrics it aggregates)
// or {"expr": "...", "error": "..."} when it does not parse. It uses Prometheus' own parser,
// so the chart's checks see an expression exactly as Prometheus will.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
}

type grouping struct {
	Labels  []string `json:"labels"`
	Metrics []string `json:"metrics"`
}

type result struct {
	Expr      string     `json:"expr"`
	Selectors []selector `json:"selectors,omitempty"`
	Groupings []grouping `json:"groupings,omitempty"`
	Error     string     `json:"error,omitempty"`
}

func selectors(expr parser.Expr) []selector {
	var out []selector
	for _, vs := range parser.ExtractSelectors(expr) {
		var s selector
		for _, m := range vs {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				s.Metric = m.Value
				continue
			}
			s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
		}
		out = append(out, s)
	}
	return out
}

func groupings(expr parser.Expr) []grouping {
	var out []grouping
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		agg, ok := node.(*parser.AggregateExpr)
		if ok && len(agg.Grouping) > 0 {
			g := grouping{Labels: agg.Grouping}
			for _, s := range selectors(agg.Expr) {
				g.Metrics = append(g.Metrics, s.Metric)
			}
			out = append(out, g)
		}
		return nil
	})
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	p := parser.NewParser(parser.Options{})
	for in.Scan() {
		var text string
		if err := json.Unmarshal(in.Bytes(), &text); err != nil {
			fmt.Fprintf(os.Stderr, "promql-selectors: a line is not a JSON string: %v\n", err)
			os.Exit(2)
		}
		r := result{Expr: text}
		if expr, err := p.ParseExpr(text); err != nil {
			r.Error = err.Error()
		} else {
			r.Selectors = selectors(expr)
			r.Groupings = groupings(expr)
		}
		if err := out.Encode(r); err != nil {
			fmt.Fprintf(os.Stderr, "promql-selectors: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "promql-selectors: %v\n", err)
		os.Exit(2)
	}
}
