package service

import (
	"reflect"
	"strings"
)

// schema describes a body type in a compact form for `nats micro info`, e.g.
// {room: str, epoch: uint}. Field names are the msgpack keys.
func schema(v any) string {
	var b strings.Builder
	writeSchema(&b, reflect.TypeOf(v))
	return b.String()
}

func writeSchema(b *strings.Builder, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		b.WriteString("{")
		n := 0
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
			if name == "" || name == "-" {
				continue
			}
			if n > 0 {
				b.WriteString(", ")
			}
			n++
			b.WriteString(name + ": ")
			writeSchema(b, f.Type)
		}
		b.WriteString("}")
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			b.WriteString("bin")
			return
		}
		b.WriteString("[")
		writeSchema(b, t.Elem())
		b.WriteString("]")
	case reflect.Map:
		b.WriteString("map[str]")
		writeSchema(b, t.Elem())
	case reflect.String:
		b.WriteString("str")
	case reflect.Bool:
		b.WriteString("bool")
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		b.WriteString("uint")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString("int")
	default:
		b.WriteString(t.Kind().String())
	}
}
