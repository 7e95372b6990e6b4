// The OCR worker's own metric: the confidence of each field it read, per field, so a dashboard shows
// when scans (or the model) get worse before reviewers notice.
import { Counter, Histogram, type Registry } from 'prom-client';
import { fieldNames } from './extract.ts';
import type { OcrResult } from './handler.ts';

export function ocrMetrics(registry: Registry): (result: OcrResult) => void {
  const confidence = new Histogram({
    name: 'ocr_field_confidence',
    help: 'Confidence (0..1) of each field read from a document, by field (a field not found counts in ocr_fields_missing_total)',
    labelNames: ['field'] as const,
    buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1],
    registers: [registry],
  });
  const missing = new Counter({
    name: 'ocr_fields_missing_total',
    help: 'Fields not found in a document that was read, by field',
    labelNames: ['field'] as const,
    registers: [registry],
  });
  for (const field of fieldNames) {
    confidence.zero({ field });
    missing.inc({ field }, 0);
  }
  return (result) => {
    for (const field of fieldNames) {
      const found = result.fields[field];
      if (found) confidence.observe({ field }, found.confidence);
      else missing.inc({ field });
    }
  };
}
