// Documents: a preview (images inline, PDFs in a frame served by this origin), a download link, and an
// upload for those who may add evidence while the decision is open.
import { useState } from 'preact/hooks';
import { type ApplicationStatus, evidenceStatuses } from '../../../shared/loans/applications/status.ts';
import { api, get } from '../api.ts';
import { when } from '../format.ts';
import type { Viewer } from '../main.tsx';
import { errorText, Notice, useLoad } from './common.tsx';

interface DocumentInfo {
  documentId: string;
  filename: string;
  contentType: string;
  size: number;
  uploadedAt: string;
  uploadedBy: string;
}

export function Documents(props: {
  id: string;
  viewer: Viewer;
  status: ApplicationStatus;
  names: (id: string | undefined) => string;
  /** The application changed with the upload (its version, its preparers): re-read it. */
  uploaded: () => void;
}) {
  const documents = useLoad(
    () => get<{ items: DocumentInfo[] }>(`/api/applications/${props.id}/documents`),
    [props.id, props.status],
  );
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const upload = async (event: Event) => {
    event.preventDefault();
    const form = event.target as HTMLFormElement;
    setBusy(true);
    setError(null);
    try {
      await api('POST', `/api/applications/${props.id}/documents`, new FormData(form));
      form.reset();
      await documents.reload();
      props.uploaded();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="documents">
      <h3>Documents</h3>
      {(documents.value?.items ?? []).length === 0 && <p>No documents.</p>}
      <ul>
        {(documents.value?.items ?? []).map((doc) => {
          const url = `/api/documents/${doc.documentId}`;
          const preview = `${url}?disposition=inline`;
          return (
            <li key={doc.documentId}>
              {doc.contentType === 'application/pdf' ? (
                <iframe class="preview" src={preview} title={`Preview of ${doc.filename}`} />
              ) : (
                <img class="preview" src={preview} alt={`Document ${doc.filename}`} loading="lazy" />
              )}
              <div>
                <a href={url} download={doc.filename}>
                  Download {doc.filename}
                </a>{' '}
                <span class="sub">
                  {Math.ceil(doc.size / 1024)} KiB · {when(doc.uploadedAt)} · {props.names(doc.uploadedBy)}
                </span>
              </div>
            </li>
          );
        })}
      </ul>
      {props.viewer.can('applications:edit') && evidenceStatuses.includes(props.status) && (
        <form onSubmit={upload} class="upload">
          <label>
            Add a document (PNG, JPEG or PDF)
            <input type="file" name="file" accept="image/png,image/jpeg,application/pdf" required />
          </label>
          <button type="submit" disabled={busy}>
            {busy ? 'Uploading…' : 'Upload'}
          </button>
        </form>
      )}
      {error ? <Notice kind="error">{errorText(error)}</Notice> : null}
    </div>
  );
}
