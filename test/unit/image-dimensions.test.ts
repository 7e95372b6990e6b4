// Image dimensions read from the header alone (PNG IHDR, JPEG SOFn), and the bound that refuses an
// image before any decoder allocates what it declares.
import { describe, expect, it } from 'vitest';
import { imageDimensions, MAX_IMAGE_SIDE, oversizedImage } from '../../shared/loans/documents.ts';
import { formJpeg, formPdf, formPng } from '../fixtures/documents.ts';
import { jpegDeclaring, pngDeclaring } from '../fixtures/image-headers.ts';

describe('imageDimensions', () => {
  it('reads a real PNG and JPEG (as the canvas writes them) and the crafted headers', async () => {
    const png = imageDimensions(formPng(), 'image/png');
    const jpeg = imageDimensions(formJpeg(), 'image/jpeg');
    expect(png).toEqual({ width: expect.any(Number), height: expect.any(Number) });
    expect(png!.width).toBeGreaterThan(100);
    expect(jpeg).toEqual(png); // the same form rendered twice
    expect(imageDimensions(pngDeclaring(100_000, 100_000), 'image/png')).toEqual({ width: 100_000, height: 100_000 });
    expect(imageDimensions(jpegDeclaring(65_000, 64_000), 'image/jpeg')).toEqual({ width: 65_000, height: 64_000 });
    // Progressive (SOF2) and lossless (SOF3) frames; DHT (C4) is no frame header.
    expect(imageDimensions(jpegDeclaring(300, 200, 0xc2), 'image/jpeg')).toEqual({ width: 300, height: 200 });
    expect(imageDimensions(jpegDeclaring(300, 200, 0xc3), 'image/jpeg')).toEqual({ width: 300, height: 200 });
    expect(imageDimensions(await formPdf(), 'application/pdf')).toBeNull();
  });

  it('gives null for headers that are cut short or out of order, never throws', () => {
    const png = pngDeclaring(10, 10);
    expect(imageDimensions(png.subarray(0, 20), 'image/png')).toBeNull();
    const renamed = png.slice();
    renamed.set([0x49, 0x44, 0x41, 0x54], 12); // IDAT first
    expect(imageDimensions(renamed, 'image/png')).toBeNull();
    const jpeg = jpegDeclaring(10, 10);
    for (let cut = 0; cut < jpeg.length; cut++)
      expect(() => imageDimensions(jpeg.subarray(0, cut), 'image/jpeg')).not.toThrow();
    expect(imageDimensions(jpeg.subarray(0, 24), 'image/jpeg')).toBeNull();
    expect(imageDimensions(jpegDeclaring(10, 10, 0xc4), 'image/jpeg')).toBeNull();
    expect(imageDimensions(new Uint8Array([0xff, 0xd8, 0x00, 0x00, 0x00, 0x00]), 'image/jpeg')).toBeNull();
  });
});

describe('oversizedImage', () => {
  it('refuses past the pixel bound or the side bound, naming the declared size', () => {
    expect(oversizedImage(pngDeclaring(100_000, 100_000), 'image/png', 40_000_000)).toMatch(
      /declares 100000x100000 pixels/,
    );
    expect(oversizedImage(pngDeclaring(5_000, 8_000), 'image/png', 40_000_000)).toBeNull();
    expect(oversizedImage(pngDeclaring(5_000, 8_001), 'image/png', 40_000_000)).toMatch(/5000x8001/);
    expect(oversizedImage(pngDeclaring(MAX_IMAGE_SIDE + 1, 1), 'image/png', 40_000_000)).toMatch(/per side/);
    expect(oversizedImage(jpegDeclaring(65_000, 64_000), 'image/jpeg', 40_000_000)).toMatch(/65000x64000/);
    expect(oversizedImage(formPng(), 'image/png', 40_000_000)).toBeNull();
    // Unknown size: left to the decoder, which fails it as unreadable.
    expect(oversizedImage(new Uint8Array([0x89, 0x50, 0x4e, 0x47]), 'image/png', 1)).toBeNull();
  });
});
